// The rater side of the blind A/B comparison: prompt templates, and the sheets raters fill
// (sheet.csv for spreadsheets, sheet.html to read or print offline) with the key that unblinds
// them (key.json). The A/B order comes from a seeded std::mt19937_64, whose output the C++
// standard fixes, so a seed recreates the same sheet on any platform.
#include "dsft/eval/ab_sheet.h"

#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "svg.h"

namespace dsft::eval {
namespace {

using nlohmann::json;

// One CSV field, RFC 4180: quoted when it holds a separator, quote, line break or edge space.
// A field a spreadsheet would run as a formula (=, +, -, @ first) gets a leading apostrophe, so
// a model's answer can neither execute nor show as #NAME? in the rater's spreadsheet.
std::string csv_field(const std::string& v) {
  std::string s = v;
  if (!s.empty() &&
      (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r'))
    s.insert(s.begin(), '\'');
  bool quote = s.find_first_of(",\"\r\n") != std::string::npos ||
               (!s.empty() && (s.front() == ' ' || s.back() == ' '));
  if (!quote) return s;
  std::string q = "\"";
  for (char ch : s) {
    if (ch == '"') q += '"';
    q += ch;
  }
  q += '"';
  return q;
}

std::string csv_row(const std::vector<std::string>& fields) {
  std::string line;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) line += ',';
    line += csv_field(fields[i]);
  }
  return line + "\r\n";  // RFC 4180 line ends; every spreadsheet reads them
}

const char* const kSheetCss = R"(
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
 margin:0 auto;max-width:1100px;padding:24px;color:#1a202c;line-height:1.5}
h1{font-size:1.5em}.item{border:1px solid #cbd5e0;border-radius:6px;margin:18px 0;padding:12px 16px;break-inside:avoid}
.item h2{font-size:1.05em;margin:0 0 8px}.prompt{background:#f7fafc;padding:8px;border-radius:4px}
.answers{display:flex;gap:16px;margin-top:10px}.answer{flex:1;min-width:0;border:1px solid #e2e8f0;border-radius:4px;padding:8px}
.answer h3{font-size:1em;margin:0 0 6px}.text{white-space:pre-wrap;word-break:break-word}
.rate{margin-top:10px;color:#2d3748}.blank{display:inline-block;min-width:10em;border-bottom:1px solid #4a5568}
@media print{body{max-width:none}.answers{gap:8px}}
)";

}  // namespace

std::string fill_prompt_template(const std::string& templ, const std::map<std::string, std::string>& vars,
                                 const std::string& record_label) {
  std::string out;
  out.reserve(templ.size() * 2);
  for (size_t i = 0; i < templ.size(); ++i) {
    char ch = templ[i];
    if (ch == '{' && i + 1 < templ.size() && templ[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (ch == '}' && i + 1 < templ.size() && templ[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (ch == '{') {
      size_t close = templ.find_first_of("{}", i + 1);
      if (close == std::string::npos || templ[close] != '}')
        throw Error("prompt template: '{' at byte " + std::to_string(i) +
                    " starts a placeholder that is never closed; write '{{' for a literal brace");
      std::string name = templ.substr(i + 1, close - i - 1);
      if (name.empty())
        throw Error("prompt template: empty placeholder '{}' at byte " + std::to_string(i) +
                    "; name a field, e.g. {question}, or write '{{}}' for literal braces");
      auto it = vars.find(name);
      if (it == vars.end()) {
        std::string have;
        for (const auto& [k, v] : vars) have += (have.empty() ? "" : ", ") + k;
        throw Error("prompt template placeholder {" + name + "} has no value in " + record_label +
                    (have.empty() ? " (it has no fields)" : " (its fields: " + have + ")"));
      }
      out += it->second;
      i = close;
    } else if (ch == '}') {
      throw Error("prompt template: single '}' at byte " + std::to_string(i) +
                  "; write '}}' for a literal brace");
    } else {
      out += ch;
    }
  }
  return out;
}

void write_ab_sheet(const std::vector<AbItem>& items, uint64_t seed, const std::string& out_dir, bool force) {
  if (items.empty()) throw Error("A/B sheet: there are no items to compare");
  std::set<std::string> ids;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].id.empty()) throw Error("A/B sheet: item " + std::to_string(i + 1) + " has an empty id");
    if (!ids.insert(items[i].id).second) throw Error("A/B sheet: item id '" + items[i].id + "' occurs twice");
  }
  const std::string csv_path = out_dir + "/sheet.csv", html_path = out_dir + "/sheet.html",
                    key_path = out_dir + "/key.json";
  if (!force)
    for (const auto& p : {csv_path, html_path, key_path})
      if (util::path_exists(p))
        throw Error(p + " already exists; pass --force to overwrite it (its ratings and key would be lost)");
  util::make_private_dir(out_dir);

  // One draw per item, in item order: the top bit decides whether A is the base model.
  std::mt19937_64 rng(seed);
  std::vector<bool> a_is_base;
  a_is_base.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) a_is_base.push_back((rng() >> 63) != 0);

  json key = {{"format", "dsft-ab-key"}, {"version", 1}, {"seed", seed}, {"items", json::object()}};
  std::string csv = "\xEF\xBB\xBF";  // UTF-8 BOM: without it spreadsheet programs garble Chinese
  csv += csv_row({"item", "prompt", "answer_a", "answer_b", "rating", "comment"});
  std::string html;
  html += "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n";
  html +=
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
      "'unsafe-inline'\">\n";
  html += "<title>A/B rating sheet</title>\n<style>" + std::string(kSheetCss) + "</style>\n</head>\n<body>\n";
  html += "<h1>A/B rating sheet (" + std::to_string(items.size()) + " items)</h1>\n";
  html +=
      "<p>For each item, read the prompt and the two answers, then write in the <b>rating</b> column of "
      "sheet.csv which answer is better: <b>A</b>, <b>B</b> or <b>tie</b>. The order of A and B changes from "
      "item to item and says nothing about which model wrote the answer. The comment column is "
      "optional.</p>\n";
  for (size_t i = 0; i < items.size(); ++i) {
    const AbItem& it = items[i];
    const std::string& a = a_is_base[i] ? it.base_answer : it.tuned_answer;
    const std::string& b = a_is_base[i] ? it.tuned_answer : it.base_answer;
    csv += csv_row({it.id, it.prompt, a, b, "", ""});
    json entry = {{"a", a_is_base[i] ? "base" : "tuned"}};
    if (!it.category.empty()) entry["category"] = it.category;
    key["items"][it.id] = entry;
    html +=
        "<div class=\"item\"><h2>Item " + svg::escape(it.id) + "</h2>\n<div class=\"prompt text\">" +
        svg::escape(it.prompt) +
        "</div>\n<div class=\"answers\"><div class=\"answer\"><h3>A</h3><div class=\"text\">" +
        svg::escape(a) + "</div></div><div class=\"answer\"><h3>B</h3><div class=\"text\">" + svg::escape(b) +
        "</div></div></div>\n<div class=\"rate\">Better: A / B / tie <span class=\"blank\"></span> &nbsp; "
        "Comment: <span class=\"blank\"></span></div></div>\n";
  }
  html += "</body>\n</html>\n";
  // The key first: sheets without their key could never be unblinded.
  util::write_file_atomic(key_path, key.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  util::write_file_atomic(csv_path, csv);
  util::write_file_atomic(html_path, html);
}

}  // namespace dsft::eval
