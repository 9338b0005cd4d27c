// `dsft clean`: records.jsonl -> clean.jsonl + rejects.jsonl + report.json. Every input record
// ends in exactly one of the outputs or the rejects file; personal data is masked before anything
// is written; output files appear atomically or not at all.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsft/data/clean_filters.h"
#include "dsft/data/pii.h"

namespace dsft::data {

enum class InvalidUtf8 { repair, drop, reject };

struct CleanConfig {
  std::string input;
  std::string output;       // kept records (the train split when val/test outputs are given)
  std::string rejects;
  std::string report;
  std::string val_output;   // optional: validation records go here instead of `output`
  std::string test_output;  // optional: test records go here instead of `output`

  InvalidUtf8 invalid_utf8 = InvalidUtf8::repair;
  bool html = true;  // markup -> text (only where the text looks like markup)
  UnicodeOptions unicode;
  bool pii = true;
  PiiOptions pii_options;

  std::vector<std::string> languages;  // allow-list; empty: every language is kept
  size_t lang_min_chars = 40;          // shorter texts are never rejected for their language
  int lang_min_share = 30;             // % of the text in allowed languages that is enough
  bool keep_unknown_language = true;   // code, numbers, tables: CLD2 says "un"

  bool exact_dedup = true;
  bool near_dedup = true;
  double near_dup_threshold = 0.8;
  int shingle_size = 5;
  int num_perm = 128;

  size_t min_chars = 5;
  size_t max_chars = 200000;
  double max_symbol_ratio = 0.4;
  double max_digit_ratio = 0.5;
  double max_repeated_line_ratio = 0.5;  // only for texts with at least 3 non-empty lines
  bool reject_empty_output = true;       // empty Alpaca output / assistant turn after cleaning

  std::vector<double> split;  // train, validation, test fractions; empty: no split
  uint64_t split_seed = 0;

  int threads = 0;  // 0: all cores
};

// Applies the keys of a YAML file to `cfg` (names as in --help, with '_' for '-'); unknown keys
// are an error naming the closest valid key.
void apply_clean_yaml(const std::string& path, CleanConfig& cfg);
// Checks ranges and combinations; throws dsft::Error naming the setting.
void validate_clean_config(const CleanConfig& cfg);
// Parsers of single settings shared by the YAML file and the command line; each throws
// dsft::UsageError naming the bad value.
PiiPattern parse_pii_pattern(const std::string& spec);  // "NAME=REGEX"
InvalidUtf8 parse_invalid_utf8(const std::string& s);   // repair | drop | reject
NormalForm parse_normal_form(const std::string& s);     // nfc | nfkc | none
std::vector<double> parse_split(const std::string& s);  // "0.9,0.05,0.05"
void set_pii_types(const std::vector<std::string>& names, PiiOptions& options);  // EMAIL,PHONE | all

struct CleanReport {
  uint64_t input_records = 0;  // non-blank input lines
  uint64_t blank_lines = 0;
  uint64_t output_records = 0;
  std::map<std::string, uint64_t> split_counts;
  std::map<std::string, uint64_t> rejected;        // by filter
  std::map<std::string, uint64_t> quality_checks;  // rejected by quality, by check
  std::map<std::string, uint64_t> pii_masked;      // spans by kind
  uint64_t records_with_pii = 0;
  std::map<std::string, uint64_t> languages;       // top language of each record checked for it
  uint64_t html_stripped = 0;
  uint64_t utf8_repaired = 0;
  uint64_t unicode_changed = 0;
  uint64_t exact_duplicates = 0;
  uint64_t near_duplicates = 0;
  std::map<std::string, double> seconds;  // per stage (summed over threads) and "wall"
  uint64_t rejected_total() const;
  nlohmann::ordered_json to_json(const CleanConfig& cfg) const;
};

// Runs the whole job. Throws dsft::Error on a fatal problem (input missing, output not writable),
// leaving no output file behind.
CleanReport clean_file(const CleanConfig& cfg);

}  // namespace dsft::data
