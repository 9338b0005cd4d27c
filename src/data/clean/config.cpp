// Settings of `dsft clean`: YAML keys, validation, and the report's JSON form.
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <sstream>

#include "dsft/data/clean.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::data {
namespace {

const std::vector<std::string> yaml_keys = {
    "output", "rejects", "report", "val_output", "test_output", "invalid_utf8", "html", "normal_form",
    "remove_controls", "normalize_spaces", "collapse_spaces", "pii", "pii_types", "pii_url_mode", "pii_patterns",
    "languages", "lang_min_chars", "lang_min_share", "keep_unknown_language", "exact_dedup", "near_dedup",
    "near_dup_threshold", "shingle_size", "num_perm", "min_chars", "max_chars", "max_symbol_ratio",
    "max_digit_ratio", "max_repeated_line_ratio", "reject_empty_output", "split", "split_seed", "threads"};

std::vector<std::string> list_of(const YAML::Node& n) {
  std::vector<std::string> out;
  if (n.IsSequence()) {
    for (const auto& v : n) out.push_back(util::trim(v.as<std::string>()));
  } else {
    for (auto& s : util::split(n.as<std::string>(), ',')) {
      std::string t = util::trim(s);
      if (!t.empty()) out.push_back(t);
    }
  }
  return out;
}

}  // namespace

InvalidUtf8 parse_invalid_utf8(const std::string& s) {
  if (s == "repair") return InvalidUtf8::repair;
  if (s == "drop") return InvalidUtf8::drop;
  if (s == "reject") return InvalidUtf8::reject;
  throw UsageError("invalid_utf8 must be repair, drop or reject (got '" + s + "')");
}

NormalForm parse_normal_form(const std::string& s) {
  std::string l;
  for (char c : s) l.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (l == "nfc") return NormalForm::nfc;
  if (l == "nfkc") return NormalForm::nfkc;
  if (l == "none") return NormalForm::none;
  throw UsageError("normal_form must be nfc, nfkc or none (got '" + s + "')");
}

void set_pii_types(const std::vector<std::string>& names, PiiOptions& o) {
  o.enabled.fill(false);
  for (const auto& n : names) {
    std::string u;
    for (char c : n) u.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    if (u == "ALL") {
      o.enabled.fill(true);
      continue;
    }
    bool found = false;
    std::vector<std::string> known;
    for (size_t k = 0; k < n_builtin_pii_kinds; ++k) {
      known.push_back(pii_kind_name(static_cast<PiiKind>(k)));
      if (u == known.back()) {
        o.enabled[k] = true;
        found = true;
      }
    }
    if (!found)
      throw UsageError("unknown PII type '" + n + "' (did you mean " + util::closest_match(u, known) +
                       "? types: EMAIL, PHONE, ID_CARD, BANK_CARD, IP, URL_CREDENTIALS, API_KEY, PASSPORT, all)");
  }
}

std::vector<double> parse_split(const std::string& s) {
  std::vector<double> f;
  for (auto& part : util::split(s, ',')) {
    try {
      size_t used = 0;
      std::string t = util::trim(part);
      f.push_back(std::stod(t, &used));
      if (used != t.size()) throw std::invalid_argument(t);
    } catch (const std::exception&) {
      throw UsageError("split must be three fractions like 0.9,0.05,0.05 (got '" + s + "')");
    }
  }
  return f;
}

PiiPattern parse_pii_pattern(const std::string& spec) {
  size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    throw UsageError("--pii-pattern takes NAME=REGEX, e.g. EMPLOYEE_ID='EMP-[0-9]{6}' (got '" + spec + "')");
  return {spec.substr(0, eq), spec.substr(eq + 1)};
}

void apply_clean_yaml(const std::string& path, CleanConfig& c) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw Error("cannot read clean config " + path + ": " + e.what());
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) throw Error("clean config " + path + " must be a mapping of settings");
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (std::find(yaml_keys.begin(), yaml_keys.end(), key) == yaml_keys.end())
      throw Error("unknown key '" + key + "' in " + path + " (did you mean '" + util::closest_match(key, yaml_keys) +
                  "'?)");
    try {
      if (key == "output") c.output = v.as<std::string>();
      else if (key == "rejects") c.rejects = v.as<std::string>();
      else if (key == "report") c.report = v.as<std::string>();
      else if (key == "val_output") c.val_output = v.as<std::string>();
      else if (key == "test_output") c.test_output = v.as<std::string>();
      else if (key == "invalid_utf8") c.invalid_utf8 = parse_invalid_utf8(v.as<std::string>());
      else if (key == "html") c.html = v.as<bool>();
      else if (key == "normal_form") c.unicode.form = parse_normal_form(v.as<std::string>());
      else if (key == "remove_controls") c.unicode.remove_controls = v.as<bool>();
      else if (key == "normalize_spaces") c.unicode.normalize_spaces = v.as<bool>();
      else if (key == "collapse_spaces") c.unicode.collapse_spaces = v.as<bool>();
      else if (key == "pii") c.pii = v.as<bool>();
      else if (key == "pii_types") set_pii_types(list_of(v), c.pii_options);
      else if (key == "pii_url_mode") {
        std::string m = v.as<std::string>();
        if (m != "url" && m != "credentials") throw UsageError("pii_url_mode must be url or credentials (got '" + m + "')");
        c.pii_options.mask_whole_url = m == "url";
      } else if (key == "pii_patterns") {
        if (!v.IsMap()) throw UsageError("pii_patterns must map NAME: REGEX");
        for (const auto& p : v) c.pii_options.custom.push_back({p.first.as<std::string>(), p.second.as<std::string>()});
      } else if (key == "languages") c.languages = list_of(v);
      else if (key == "lang_min_chars") c.lang_min_chars = v.as<size_t>();
      else if (key == "lang_min_share") c.lang_min_share = v.as<int>();
      else if (key == "keep_unknown_language") c.keep_unknown_language = v.as<bool>();
      else if (key == "exact_dedup") c.exact_dedup = v.as<bool>();
      else if (key == "near_dedup") c.near_dedup = v.as<bool>();
      else if (key == "near_dup_threshold") c.near_dup_threshold = v.as<double>();
      else if (key == "shingle_size") c.shingle_size = v.as<int>();
      else if (key == "num_perm") c.num_perm = v.as<int>();
      else if (key == "min_chars") c.min_chars = v.as<size_t>();
      else if (key == "max_chars") c.max_chars = v.as<size_t>();
      else if (key == "max_symbol_ratio") c.max_symbol_ratio = v.as<double>();
      else if (key == "max_digit_ratio") c.max_digit_ratio = v.as<double>();
      else if (key == "max_repeated_line_ratio") c.max_repeated_line_ratio = v.as<double>();
      else if (key == "reject_empty_output") c.reject_empty_output = v.as<bool>();
      else if (key == "split") {
        if (v.IsSequence()) {
          c.split.clear();
          for (const auto& x : v) c.split.push_back(x.as<double>());
        } else {
          c.split = parse_split(v.as<std::string>());
        }
      } else if (key == "split_seed") c.split_seed = v.as<uint64_t>();
      else if (key == "threads") c.threads = v.as<int>();
    } catch (const YAML::Exception&) {
      throw Error("key '" + key + "' in " + path + " has a value of the wrong type");
    }
  }
}

void validate_clean_config(const CleanConfig& c) {
  if (c.input.empty()) throw UsageError("clean needs an input file (records.jsonl)");
  if (c.output.empty()) throw UsageError("clean needs -o/--output");
  if (c.rejects.empty()) throw UsageError("clean needs --rejects (every dropped record is written there)");
  if (c.report.empty()) throw UsageError("clean needs --report");
  std::vector<std::string> outs = {c.output, c.rejects, c.report};
  if (!c.val_output.empty()) outs.push_back(c.val_output);
  if (!c.test_output.empty()) outs.push_back(c.test_output);
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i] == c.input) throw UsageError("output file " + outs[i] + " is the input file");
    for (size_t j = i + 1; j < outs.size(); ++j)
      if (outs[i] == outs[j]) throw UsageError("two outputs are the same file: " + outs[i]);
  }
  if (!c.split.empty()) {
    if (c.split.size() != 3) throw UsageError("split needs three fractions (train, validation, test)");
    double sum = 0;
    for (double f : c.split) {
      if (!(f >= 0 && f <= 1)) throw UsageError("split fractions must be in [0, 1]");
      sum += f;
    }
    if (std::fabs(sum - 1) > 1e-6) throw UsageError("split fractions must sum to 1 (got " + std::to_string(sum) + ")");
  }
  if ((!c.val_output.empty() || !c.test_output.empty()) && c.split.empty())
    throw UsageError("--val-output/--test-output need --split (e.g. --split 0.9,0.05,0.05)");
  if (!(c.near_dup_threshold > 0 && c.near_dup_threshold <= 1))
    throw UsageError("near_dup_threshold must be in (0, 1] (got " + std::to_string(c.near_dup_threshold) + ")");
  if (c.min_chars > c.max_chars) throw UsageError("min_chars is larger than max_chars");
  for (double r : {c.max_symbol_ratio, c.max_digit_ratio, c.max_repeated_line_ratio})
    if (!(r >= 0 && r <= 1)) throw UsageError("ratio limits must be in [0, 1]");
  if (c.lang_min_share < 0 || c.lang_min_share > 100) throw UsageError("lang_min_share is a percentage in [0, 100]");
  if (c.threads < 0) throw UsageError("threads must be >= 0");
}

uint64_t CleanReport::rejected_total() const {
  uint64_t t = 0;
  for (const auto& [k, v] : rejected) t += v;
  return t;
}

nlohmann::ordered_json CleanReport::to_json(const CleanConfig& c) const {
  nlohmann::ordered_json j;
  j["input"] = {{"path", c.input}, {"records", input_records}, {"blank_lines", blank_lines}};
  j["output"] = {{"records", output_records}, {"splits", split_counts}};
  j["rejected"] = {{"total", rejected_total()}, {"by_filter", rejected}, {"quality_checks", quality_checks}};
  j["balanced"] = input_records == output_records + rejected_total();
  j["modified"] = {{"html_stripped", html_stripped},
                   {"utf8_repaired", utf8_repaired},
                   {"unicode_changed", unicode_changed},
                   {"records_with_pii", records_with_pii}};
  j["pii_masked"] = pii_masked;
  j["languages"] = languages;
  j["duplicates"] = {{"exact", exact_duplicates}, {"near", near_duplicates}};
  j["seconds"] = seconds;
  std::vector<std::string> types;
  for (size_t k = 0; k < n_builtin_pii_kinds; ++k)
    if (c.pii_options.enabled[k]) types.push_back(pii_kind_name(static_cast<PiiKind>(k)));
  std::vector<std::string> custom;
  for (const auto& p : c.pii_options.custom) custom.push_back(p.name);
  const char* forms[] = {"none", "nfc", "nfkc"};
  j["settings"] = {
      {"invalid_utf8", c.invalid_utf8 == InvalidUtf8::repair ? "repair" : c.invalid_utf8 == InvalidUtf8::drop ? "drop" : "reject"},
      {"html", c.html},
      {"normal_form", forms[static_cast<int>(c.unicode.form)]},
      {"pii", c.pii},
      {"pii_types", types},
      {"pii_patterns", custom},
      {"pii_url_mode", c.pii_options.mask_whole_url ? "url" : "credentials"},
      {"languages", c.languages},
      {"exact_dedup", c.exact_dedup},
      {"near_dedup", c.near_dedup},
      {"near_dup_threshold", c.near_dup_threshold},
      {"min_chars", c.min_chars},
      {"max_chars", c.max_chars},
      {"split", c.split}};
  return j;
}

}  // namespace dsft::data
