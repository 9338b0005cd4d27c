// `dsft clean records.jsonl -o clean.jsonl --rejects rejects.jsonl --report report.json`:
// parses options (defaults < --config YAML < command line) and calls dsft::data::clean_file.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <memory>

#include "dsft/cli/commands.h"
#include "dsft/data/clean.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::cli {
namespace {

struct CleanArgs {
  data::CleanConfig defaults;
  std::string config;
  // Options that were given on the command line apply after the YAML file.
  std::vector<std::pair<CLI::Option*, std::function<void(data::CleanConfig&)>>> apply;

  template <class T>
  CLI::Option* add(CLI::App* cmd, const std::string& name, std::shared_ptr<T> value, const std::string& help,
                   std::function<void(data::CleanConfig&, const T&)> set) {
    CLI::Option* o = cmd->add_option(name, *value, help);
    apply.emplace_back(o, [value, set](data::CleanConfig& c) { set(c, *value); });
    return o;
  }
  CLI::Option* flag(CLI::App* cmd, const std::string& name, const std::string& help,
                    std::function<void(data::CleanConfig&)> set) {
    CLI::Option* o = cmd->add_flag(name, help);
    apply.emplace_back(o, std::move(set));
    return o;
  }
};

std::vector<std::string> comma_list(const std::string& s) {
  std::vector<std::string> out;
  for (auto& p : util::split(s, ',')) {
    std::string t = util::trim(p);
    if (!t.empty()) out.push_back(t);
  }
  return out;
}

std::string summary(const data::CleanReport& r, const data::CleanConfig& c) {
  std::string s = "clean: " + std::to_string(r.input_records) + " records in, " + std::to_string(r.output_records) +
                  " kept, " + std::to_string(r.rejected_total()) + " rejected";
  std::string by;
  for (const auto& [k, v] : r.rejected) by += (by.empty() ? "" : ", ") + k + " " + std::to_string(v);
  if (!by.empty()) s += " (" + by + ")";
  uint64_t masked = 0;
  for (const auto& [k, v] : r.pii_masked) masked += v;
  s += "; " + std::to_string(masked) + " PII spans masked; report: " + c.report;
  return s;
}

}  // namespace

void add_clean_command(CLI::App& app) {
  auto a = std::make_shared<CleanArgs>();
  const data::CleanConfig& d = a->defaults;
  CLI::App* cmd = app.add_subcommand(
      "clean",
      "Clean training records (JSON Lines: {\"text\"}, {\"instruction\",\"input\",\"output\"} or {\"messages\"}).\n"
      "Every text field goes through: markup -> text (gumbo, only when it looks like HTML/XML), UTF-8 repair,\n"
      "Unicode NFC/NFKC, control characters and odd spaces, PII masking ([EMAIL] [PHONE] [ID_CARD] [BANK_CARD]\n"
      "[IP] [URL_CREDENTIALS] [API_KEY] [PASSPORT] and --pii-pattern kinds); then each record passes quality\n"
      "checks, the language allow-list, exact and near-duplicate removal (the first occurrence is kept) and\n"
      "gets its split. Every input record ends in the output or in --rejects with filter, reason, id, source,\n"
      "line and the masked record; report.json counts everything. Settings: defaults < --config YAML (same\n"
      "names with '_') < command line. Outputs are written atomically: all of them or none.");
  auto input = std::make_shared<std::string>();
  cmd->add_option("input", *input, "Input records (JSON Lines)")->required();
  auto output = std::make_shared<std::string>(), rejects = std::make_shared<std::string>(),
       report = std::make_shared<std::string>();
  a->add<std::string>(cmd, "-o,--output", output, "Kept records (the train split when --val-output/--test-output are given)",
                      [](auto& c, auto& v) { c.output = v; });
  a->add<std::string>(cmd, "--rejects", rejects, "Rejected records, one JSON line each",
                      [](auto& c, auto& v) { c.rejects = v; });
  a->add<std::string>(cmd, "--report", report, "Report: counts per filter, PII kind, language, timings",
                      [](auto& c, auto& v) { c.report = v; });
  cmd->add_option("--config", a->config, "YAML file with any of the settings below (keys with '_', e.g. near_dup_threshold)");

  auto utf8 = std::make_shared<std::string>("repair");
  a->add<std::string>(cmd, "--invalid-utf8", utf8, "Invalid UTF-8 bytes: repair (U+FFFD), drop, or reject the record",
                      [](auto& c, auto& v) { c.invalid_utf8 = data::parse_invalid_utf8(v); })
      ->capture_default_str();
  a->flag(cmd, "--no-html", "Keep markup as it is (default: markup -> text where a text looks like HTML/XML)",
          [](auto& c) { c.html = false; });
  auto form = std::make_shared<std::string>("nfc");
  a->add<std::string>(cmd, "--normal-form", form, "Unicode normal form: nfc, nfkc or none",
                      [](auto& c, auto& v) { c.unicode.form = data::parse_normal_form(v); })
      ->capture_default_str();
  a->flag(cmd, "--keep-controls", "Keep control characters (default: removed, except \\n and \\t)",
          [](auto& c) { c.unicode.remove_controls = false; });
  a->flag(cmd, "--keep-spaces", "Keep odd spaces and runs of spaces (default: NBSP, U+3000, ... -> ' ', runs collapsed)",
          [](auto& c) {
            c.unicode.normalize_spaces = false;
            c.unicode.collapse_spaces = false;
          });

  a->flag(cmd, "--no-pii", "Do not mask personal data", [](auto& c) { c.pii = false; });
  auto types = std::make_shared<std::string>("all");
  a->add<std::string>(cmd, "--pii-types", types,
                      "PII kinds to mask: all, or a list of EMAIL,PHONE,ID_CARD,BANK_CARD,IP,URL_CREDENTIALS,API_KEY,PASSPORT",
                      [](auto& c, auto& v) { data::set_pii_types(comma_list(v), c.pii_options); })
      ->capture_default_str();
  auto url_mode = std::make_shared<std::string>("url");
  a->add<std::string>(cmd, "--pii-url-mode", url_mode, "URLs with credentials: mask the whole url, or only the credentials",
                      [](auto& c, auto& v) {
                        if (v != "url" && v != "credentials")
                          throw UsageError("--pii-url-mode must be url or credentials (got '" + v + "')");
                        c.pii_options.mask_whole_url = v == "url";
                      })
      ->capture_default_str();
  auto patterns = std::make_shared<std::vector<std::string>>();
  a->add<std::vector<std::string>>(cmd, "--pii-pattern", patterns,
                                   "Extra kind NAME=REGEX (repeatable), masked as [NAME], e.g. EMPLOYEE_ID='EMP-[0-9]{6}'",
                                   [](auto& c, auto& v) {
                                     for (const auto& s : v) c.pii_options.custom.push_back(data::parse_pii_pattern(s));
                                   });

  auto langs = std::make_shared<std::string>();
  a->add<std::string>(cmd, "--languages", langs, "Allowed languages (ISO 639-1), e.g. zh,en (default: all)",
                      [](auto& c, auto& v) { c.languages = comma_list(v); });
  auto lang_chars = std::make_shared<size_t>(d.lang_min_chars);
  a->add<size_t>(cmd, "--lang-min-chars", lang_chars, "Texts shorter than this are never rejected for their language",
                 [](auto& c, auto& v) { c.lang_min_chars = v; })
      ->capture_default_str();
  auto lang_share = std::make_shared<int>(d.lang_min_share);
  a->add<int>(cmd, "--lang-min-share", lang_share,
              "Mixed texts are kept when at least this % is in allowed languages (CLD2's top three)",
              [](auto& c, auto& v) { c.lang_min_share = v; })
      ->capture_default_str();
  a->flag(cmd, "--reject-unknown-language", "Reject texts CLD2 cannot identify (default: kept: code, tables, numbers)",
          [](auto& c) { c.keep_unknown_language = false; });

  a->flag(cmd, "--no-exact-dedup", "Keep exact duplicates", [](auto& c) { c.exact_dedup = false; });
  a->flag(cmd, "--no-near-dedup", "Keep near-duplicates", [](auto& c) { c.near_dedup = false; });
  auto thr = std::make_shared<double>(d.near_dup_threshold);
  a->add<double>(cmd, "--near-dup-threshold", thr, "Estimated Jaccard similarity of character shingles that counts as a duplicate",
                 [](auto& c, auto& v) { c.near_dup_threshold = v; })
      ->capture_default_str();
  auto shingle = std::make_shared<int>(d.shingle_size);
  a->add<int>(cmd, "--shingle-size", shingle, "Characters per shingle (whitespace ignored)",
              [](auto& c, auto& v) { c.shingle_size = v; })
      ->capture_default_str();
  auto perm = std::make_shared<int>(d.num_perm);
  a->add<int>(cmd, "--num-perm", perm, "MinHash signature length (memory: 4 bytes each per kept record)",
              [](auto& c, auto& v) { c.num_perm = v; })
      ->capture_default_str();

  auto min_chars = std::make_shared<size_t>(d.min_chars), max_chars = std::make_shared<size_t>(d.max_chars);
  a->add<size_t>(cmd, "--min-chars", min_chars, "Reject records with fewer characters (all text fields)",
                 [](auto& c, auto& v) { c.min_chars = v; })
      ->capture_default_str();
  a->add<size_t>(cmd, "--max-chars", max_chars, "Reject records with more characters",
                 [](auto& c, auto& v) { c.max_chars = v; })
      ->capture_default_str();
  auto sym = std::make_shared<double>(d.max_symbol_ratio), dig = std::make_shared<double>(d.max_digit_ratio),
       rep = std::make_shared<double>(d.max_repeated_line_ratio);
  a->add<double>(cmd, "--max-symbol-ratio", sym, "Reject when punctuation/symbols exceed this share of non-space characters",
                 [](auto& c, auto& v) { c.max_symbol_ratio = v; })
      ->capture_default_str();
  a->add<double>(cmd, "--max-digit-ratio", dig, "Reject when digits exceed this share of non-space characters",
                 [](auto& c, auto& v) { c.max_digit_ratio = v; })
      ->capture_default_str();
  a->add<double>(cmd, "--max-repeated-line-ratio", rep, "Reject when this share of lines repeats an earlier line (3+ lines)",
                 [](auto& c, auto& v) { c.max_repeated_line_ratio = v; })
      ->capture_default_str();
  a->flag(cmd, "--keep-empty-output", "Keep Alpaca records with an empty output and chats with an empty assistant turn",
          [](auto& c) { c.reject_empty_output = false; });

  auto split = std::make_shared<std::string>();
  a->add<std::string>(cmd, "--split", split,
                      "train,validation,test fractions, e.g. 0.9,0.05,0.05: adds \"split\" to each record, chosen by a hash of its id",
                      [](auto& c, auto& v) { c.split = data::parse_split(v); });
  auto seed = std::make_shared<uint64_t>(0);
  a->add<uint64_t>(cmd, "--split-seed", seed, "Seed of the split hash", [](auto& c, auto& v) { c.split_seed = v; })
      ->capture_default_str();
  auto val = std::make_shared<std::string>(), test = std::make_shared<std::string>();
  a->add<std::string>(cmd, "--val-output", val, "Write the validation split here instead of -o",
                      [](auto& c, auto& v) { c.val_output = v; });
  a->add<std::string>(cmd, "--test-output", test, "Write the test split here instead of -o",
                      [](auto& c, auto& v) { c.test_output = v; });
  auto threads = std::make_shared<int>(0);
  a->add<int>(cmd, "--threads", threads, "Worker threads (0: all cores); the output does not depend on it",
              [](auto& c, auto& v) { c.threads = v; })
      ->capture_default_str();

  cmd->callback([a, input] {
    data::CleanConfig cfg = a->defaults;
    cfg.input = *input;
    if (!a->config.empty()) data::apply_clean_yaml(a->config, cfg);
    for (auto& [opt, set] : a->apply)
      if (opt->count() > 0) set(cfg);
    data::CleanReport r = data::clean_file(cfg);
    std::fprintf(stderr, "%s\n", summary(r, cfg).c_str());
  });
}

}  // namespace dsft::cli
