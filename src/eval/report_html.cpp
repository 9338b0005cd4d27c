// report.html: renders report.json (plus a run's metrics.jsonl) as one self-contained page:
// inline CSS, inline SVG charts, no scripts and no external files, every value HTML-escaped
// (model names, categories and gate expressions come from user data). Also reads metrics.jsonl.
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsft/eval/report.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "svg.h"

namespace dsft::eval {
namespace {

using nlohmann::json;
using svg::escape;
using svg::format_number;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kBaseColor = "#a0aec0";
const char* const kTunedColor = "#2b6cb0";
const char* const kWinColor = "#38a169";
const char* const kTieColor = "#cbd5e0";
const char* const kLossColor = "#e53e3e";

// A number from a JSON value that may be missing, null (non-finite values are written as null)
// or of the wrong type: NaN then, so the page says "n/a" instead of failing.
double num(const json& j, const char* key) {
  if (!j.is_object()) return kNaN;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return kNaN;
  return it->get<double>();
}

// Whether a metric was recorded at all (null counts: it was recorded, and was not finite).
bool has_num(const json& j, const char* key) {
  return j.is_object() && j.contains(key);
}

std::string str(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string pct(double v) {
  if (!std::isfinite(v)) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", v * 100.0);
  return buf;
}

std::string cell(const std::string& s) {
  return "<td>" + escape(s) + "</td>";
}
std::string num_cell(const std::string& s) {
  return "<td class=\"num\">" + escape(s) + "</td>";
}

std::string note(const std::string& s) {
  return "<p class=\"note\">" + escape(s) + "</p>\n";
}

const char* const kCss = R"(
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
 margin:0 auto;max-width:980px;padding:24px;color:#1a202c;background:#fff;line-height:1.45}
h1{font-size:1.6em;margin:0 0 8px}h2{font-size:1.25em;margin:32px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 12px}th,td{border:1px solid #e2e8f0;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f7fafc}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta th{width:8em}.meta td{word-break:break-all}
.pass{color:#22543d;background:#c6f6d5;font-weight:600}.fail{color:#742a2a;background:#fed7d7;font-weight:600}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;margin:6px 0}
.note{color:#4a5568;font-style:italic}
svg.chart{display:block;max-width:100%;height:auto;margin:8px 0 16px;font-size:12px}
svg .chart-title{font-size:14px;font-weight:600;fill:#1a202c}svg .tick,svg .legend{fill:#4a5568}
svg .axis-label{fill:#2d3748}svg .value{fill:#2d3748;font-size:11px}svg .value.inside{fill:#1a202c}
svg .note{fill:#718096;font-style:italic}
svg .grid{stroke:#edf2f7}svg .axis,svg .tick-mark{stroke:#718096}
details pre{white-space:pre-wrap;word-break:break-all;background:#f7fafc;padding:8px;font-size:12px}
@media print{body{max-width:none}h2{break-after:avoid}svg.chart{break-inside:avoid}}
)";

std::string header(const json& r) {
  std::string s = "<h1>dsft evaluation report</h1>\n<table class=\"meta\">";
  for (const char* key : {"model", "adapter", "data", "created"}) {
    std::string v = str(r, key);
    if (!v.empty()) s += "<tr><th>" + std::string(key) + "</th>" + cell(v) + "</tr>";
  }
  s += "</table>\n";
  return s;
}

std::string gates_section(const json& r) {
  std::string s = "<h2 id=\"gates\">Gates</h2>\n";
  auto it = r.find("gates");
  if (it == r.end() || !it->is_array() || it->empty())
    return s + note("No gates were set for this evaluation.");
  bool all = true;
  std::string rows;
  for (const auto& g : *it) {
    bool passed = g.is_object() && g.value("passed", false) == true;
    all = all && passed;
    rows += "<tr>" + cell(str(g, "expr")) + cell(str(g, "metric")) +
            num_cell(format_number(num(g, "value"))) + "<td class=\"" + (passed ? "pass" : "fail") + "\">" +
            (passed ? "pass" : "fail") + "</td></tr>";
  }
  s += std::string("<p class=\"verdict ") + (all ? "pass\">All gates passed" : "fail\">Some gates failed") +
       "</p>\n";
  s += "<table><tr><th>gate</th><th>metric</th><th>value</th><th>result</th></tr>" + rows + "</table>\n";
  return s;
}

std::string perplexity_section(const json& r) {
  std::string s = "<h2 id=\"perplexity\">Perplexity</h2>\n";
  auto it = r.find("perplexity");
  if (it == r.end() || !it->is_object() || it->empty()) return s + note("Perplexity was not measured.");
  const json& p = *it;
  std::vector<svg::BarSeries> bars;
  std::string rows;
  for (const char* side : {"base", "tuned"}) {
    auto sit = p.find(side);
    if (sit == p.end() || !sit->is_object()) continue;
    bars.push_back({side, side == std::string("base") ? kBaseColor : kTunedColor, {num(*sit, "ppl")}});
    rows += "<tr><th>" + std::string(side) + "</th>" + num_cell(format_number(num(*sit, "ppl"))) +
            num_cell(format_number(num(*sit, "loss"))) + num_cell(format_number(num(*sit, "tokens"))) +
            "</tr>";
  }
  if (bars.empty()) return s + note("Perplexity was not measured.");
  svg::BarChartOptions o;
  o.title = "Perplexity (lower is better)";
  o.y_label = "perplexity";
  o.id = "perplexity";
  s += svg::bar_chart({"held-out data"}, bars, o);
  s += "<table><tr><th></th><th>perplexity</th><th>mean loss</th><th>tokens</th></tr>" + rows + "</table>\n";
  double rel = num(p, "relative_change");
  if (std::isfinite(rel)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%+.1f%%", rel * 100.0);
    s += "<p>Relative change of perplexity, tuned vs base: <b>" + escape(buf) + "</b></p>\n";
  }
  std::string settings;
  for (const char* key : {"window", "stride", "chat_template", "train_on_inputs"})
    if (p.contains(key) && !p[key].is_null())
      settings += std::string(settings.empty() ? "" : ", ") + key + " " + str(p, key);
  if (!settings.empty()) s += "<p class=\"note\">Measured with " + escape(settings) + ".</p>\n";
  return s;
}

std::string accuracy_section(const json& r) {
  std::string s = "<h2 id=\"accuracy\">Task accuracy</h2>\n";
  auto it = r.find("accuracy");
  if (it == r.end() || !it->is_object() || it->empty()) return s + note("Task accuracy was not measured.");
  const json& a = *it;
  struct Metric {
    const char* key;
    const char* label;
    const char* color;
  };
  const Metric metrics[] = {{"exact_match", "exact match", "#2b6cb0"},
                            {"normalized_match", "normalised match", "#3182ce"},
                            {"contains", "contains", "#63b3ed"},
                            {"rouge_l", "ROUGE-L", "#805ad5"}};

  std::vector<std::string> groups{"all"};
  std::vector<const json*> rows{&a};
  auto pc = a.find("per_category");
  if (pc != a.end() && pc->is_object())
    for (auto c = pc->begin(); c != pc->end(); ++c) {
      groups.push_back(c.key());
      rows.push_back(&c.value());
    }
  std::vector<svg::BarSeries> series;
  std::string head = "<tr><th>category</th><th>n</th>";
  for (const auto& m : metrics) {
    bool present = false;
    for (const json* row : rows) present = present || has_num(*row, m.key);
    if (!present) continue;
    svg::BarSeries b{m.label, m.color, {}};
    for (const json* row : rows) b.values.push_back(num(*row, m.key));
    series.push_back(std::move(b));
    head += "<th>" + std::string(m.label) + "</th>";
  }
  head += "</tr>";
  if (series.empty()) {
    s += note("No accuracy metric was recorded.");
  } else {
    svg::BarChartOptions o;
    o.title = groups.size() > 1 ? "Accuracy per category" : "Accuracy";
    o.y_label = "share of answers";
    o.id = "accuracy";
    o.y_max = 1.0;
    o.percent = true;
    s += svg::bar_chart(groups, series, o);
  }
  std::string body;
  for (size_t i = 0; i < rows.size(); ++i) {
    body += "<tr>" + cell(groups[i]) + num_cell(format_number(num(*rows[i], "n")));
    for (const auto& m : metrics) {
      bool present = false;
      for (const json* row : rows) present = present || has_num(*row, m.key);
      if (present) body += num_cell(pct(num(*rows[i], m.key)));
    }
    body += "</tr>";
  }
  s += "<table>" + head + body + "</table>\n";
  auto mc = a.find("multiple_choice");
  if (mc != a.end() && mc->is_object())
    s += "<p>Multiple choice: <b>" + escape(pct(num(*mc, "accuracy"))) + "</b> of " +
         escape(format_number(num(*mc, "n"))) + " questions.</p>\n";

  // With --baseline: the same metrics for the base model, side by side with the tuned one.
  auto bit = r.find("baseline_accuracy");
  if (bit != r.end() && bit->is_object() && !bit->empty()) {
    const json& b = *bit;
    std::vector<std::string> names;
    svg::BarSeries base{"base", kBaseColor, {}}, tuned{"tuned", kTunedColor, {}};
    std::string trows;
    for (const auto& m : metrics) {
      if (!has_num(a, m.key) && !has_num(b, m.key)) continue;
      names.push_back(m.label);
      base.values.push_back(num(b, m.key));
      tuned.values.push_back(num(a, m.key));
      trows += "<tr>" + cell(m.label) + num_cell(pct(num(b, m.key))) + num_cell(pct(num(a, m.key))) + "</tr>";
    }
    auto bmc = b.find("multiple_choice");
    if (mc != a.end() && mc->is_object() && bmc != b.end() && bmc->is_object()) {
      names.push_back("multiple choice");
      base.values.push_back(num(*bmc, "accuracy"));
      tuned.values.push_back(num(*mc, "accuracy"));
      trows += "<tr>" + cell("multiple choice") + num_cell(pct(num(*bmc, "accuracy"))) +
               num_cell(pct(num(*mc, "accuracy"))) + "</tr>";
    }
    if (!names.empty()) {
      svg::BarChartOptions o;
      o.title = "Accuracy, base vs tuned";
      o.y_label = "share of answers";
      o.id = "accuracy-baseline";
      o.y_max = 1.0;
      o.percent = true;
      s += svg::bar_chart(names, {base, tuned}, o);
      s += "<table><tr><th>metric</th><th>base</th><th>tuned</th></tr>" + trows + "</table>\n";
    }
  }
  return s;
}

std::string interval(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[0].is_number() || !(*it)[1].is_number())
    return "";
  return " [" + pct((*it)[0].get<double>()) + ", " + pct((*it)[1].get<double>()) + "]";
}

// Landis & Koch's reading of kappa, the one most reviewers know.
std::string kappa_words(double k) {
  if (!std::isfinite(k)) return "";
  if (k < 0) return "poor (less than chance)";
  if (k <= 0.20) return "slight";
  if (k <= 0.40) return "fair";
  if (k <= 0.60) return "moderate";
  if (k <= 0.80) return "substantial";
  return "almost perfect";
}

std::string ab_section(const json& r) {
  std::string s = "<h2 id=\"ab\">Blind A/B comparison</h2>\n";
  auto sheet = r.find("ab_sheet");
  if (sheet != r.end() && sheet->is_object())
    s += "<p>Rater sheet for " + escape(format_number(num(*sheet, "items"))) + " items written to <code>" +
         escape(str(*sheet, "dir")) + "</code> (A/B order from seed " + escape(str(*sheet, "seed")) +
         ").</p>\n";
  auto it = r.find("ab");
  if (it == r.end() || !it->is_object() || it->empty())
    return s + note("No rater sheets were aggregated (see docs/ab-testing.md for the workflow).");
  const json& ab = *it;
  std::vector<std::string> labels;
  std::vector<const json*> rows;
  auto pooled = ab.find("pooled");
  if (pooled != ab.end() && pooled->is_object()) labels.push_back("all raters"), rows.push_back(&*pooled);
  auto raters = ab.find("raters");
  if (raters != ab.end() && raters->is_array())
    for (const auto& rt : *raters) labels.push_back("rater " + str(rt, "name")), rows.push_back(&rt);
  auto cats = ab.find("per_category");
  if (cats != ab.end() && cats->is_object())
    for (auto c = cats->begin(); c != cats->end(); ++c)
      labels.push_back("category " + c.key()), rows.push_back(&c.value());
  if (rows.empty()) return s + note("The A/B section holds no ratings.");

  std::vector<std::vector<double>> fractions;
  std::string table =
      "<table><tr><th></th><th>ratings</th><th>tuned better (95% CI)</th><th>tie (95% CI)</th>"
      "<th>base better (95% CI)</th><th>tuned preferred, ties excluded (95% CI)</th></tr>";
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& row = *rows[i];
    fractions.push_back({num(row, "win_rate"), num(row, "tie_rate"), num(row, "loss_rate")});
    table += "<tr>" + cell(labels[i]) + num_cell(format_number(num(row, "n"))) +
             num_cell(pct(num(row, "win_rate")) + interval(row, "win_ci")) +
             num_cell(pct(num(row, "tie_rate")) + interval(row, "tie_ci")) +
             num_cell(pct(num(row, "loss_rate")) + interval(row, "loss_ci")) +
             num_cell(pct(num(row, "preference")) + interval(row, "preference_ci")) + "</tr>";
  }
  table += "</table>\n";
  s += svg::stacked_bars(labels,
                         {{"tuned better", kWinColor}, {"tie", kTieColor}, {"base better", kLossColor}},
                         fractions, "Tuned vs base: share of ratings", "ab");
  s += table;
  double kappa = num(ab, "fleiss_kappa");
  if (std::isfinite(kappa))
    s += "<p>Agreement between raters (Fleiss' kappa over " + escape(format_number(num(ab, "kappa_items"))) +
         " items rated by all " + escape(format_number(num(ab, "kappa_raters"))) + " raters): <b>" +
         escape(format_number(kappa)) + "</b>, " + escape(kappa_words(kappa)) + ".</p>\n";
  else if (ab.contains("fleiss_kappa"))
    s += note(
        "Fleiss' kappa could not be computed (no item was rated by every rater, or all ratings agree on one "
        "category).");
  return s;
}

std::string training_section(const json& r, const std::vector<json>& metrics) {
  std::string s = "<h2 id=\"training\">Training</h2>\n";
  std::string path;
  auto t = r.find("training");
  if (t != r.end()) path = str(*t, "metrics_path");
  if (!path.empty()) s += "<p>From <code>" + escape(path) + "</code>.</p>\n";
  svg::Series loss{"training loss", kTunedColor, {}, false};
  svg::Series eval_loss{"eval loss", "#dd6b20", {}, true};
  svg::Series lr{"learning rate", "#38a169", {}, false};
  size_t no_step = 0;
  for (const json& row : metrics) {
    double step = num(row, "step");
    if (!std::isfinite(step)) {
      ++no_step;
      continue;
    }
    // A null is a value the trainer could not represent (NaN/inf): kept as a gap in the curve.
    if (row.contains("loss")) loss.xy.emplace_back(step, num(row, "loss"));
    if (row.contains("eval_loss")) eval_loss.xy.emplace_back(step, num(row, "eval_loss"));
    if (row.contains("lr")) lr.xy.emplace_back(step, num(row, "lr"));
  }
  if (loss.xy.empty() && eval_loss.xy.empty() && lr.xy.empty())
    return s + note(metrics.empty() ? "No training metrics were given, so there are no curves."
                                    : "The training metrics hold no loss or learning-rate values.");
  if (!loss.xy.empty() || !eval_loss.xy.empty()) {
    svg::LineChartOptions o;
    o.title = "Loss";
    o.x_label = "step";
    o.y_label = "loss";
    o.id = "loss";
    std::vector<svg::Series> ser;
    if (!loss.xy.empty()) ser.push_back(loss);
    if (!eval_loss.xy.empty()) ser.push_back(eval_loss);
    s += svg::line_chart(ser, o);
  } else {
    s += note("No loss values were logged.");
  }
  if (!lr.xy.empty()) {
    svg::LineChartOptions o;
    o.title = "Learning rate";
    o.x_label = "step";
    o.y_label = "learning rate";
    o.id = "lr";
    s += svg::line_chart({lr}, o);
  } else {
    s += note("No learning-rate values were logged.");
  }
  if (no_step) s += note(std::to_string(no_step) + " metrics rows without a step number were left out.");
  return s;
}

std::string speed_section(const json& r) {
  std::string s = "<h2 id=\"speed\">Speed</h2>\n";
  auto it = r.find("speed");
  if (it == r.end() || !it->is_object() || it->empty()) return s + note("Speed was not measured.");
  struct Known {
    const char* key;
    const char* label;
  };
  const Known known[] = {{"prefill_tokens_per_s", "prefill (tokens/s)"},
                         {"decode_tokens_per_s", "decode (tokens/s)"},
                         {"time_to_first_token_ms", "time to first token (ms)"},
                         {"peak_memory_bytes", "peak memory"}};
  std::string rows;
  for (const auto& k : known) {
    if (!it->contains(k.key)) continue;
    double v = num(*it, k.key);
    std::string shown = std::string(k.key) == "peak_memory_bytes" && std::isfinite(v)
                            ? format_number(v / (1024.0 * 1024.0)) + " MiB"
                            : format_number(v);
    rows += "<tr><th>" + std::string(k.label) + "</th>" + num_cell(shown) + "</tr>";
  }
  // Anything else the measurement recorded, under its own key.
  for (auto f = it->begin(); f != it->end(); ++f) {
    bool is_known = false;
    for (const auto& k : known) is_known = is_known || f.key() == k.key;
    if (is_known) continue;
    std::string v = f->is_number()   ? format_number(f->get<double>())
                    : f->is_string() ? f->get<std::string>()
                                     : f->dump();
    rows += "<tr><th>" + escape(f.key()) + "</th>" + num_cell(v) + "</tr>";
  }
  return s + "<table>" + rows + "</table>\n";
}

}  // namespace

std::vector<nlohmann::json> read_metrics_jsonl(const std::string& path) {
  std::string text = util::read_file(path);
  std::vector<json> rows;
  std::istringstream in(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      std::string excerpt = line.size() > 60 ? line.substr(0, 60) + "..." : line;
      throw Error(path + ":" + std::to_string(line_no) + ": expected one JSON object per line, got '" +
                  excerpt + "' (a line cut short by an interrupted run can be deleted)");
    }
    rows.push_back(std::move(j));
  }
  return rows;
}

std::string render_report_html(const nlohmann::json& report, const std::vector<nlohmann::json>& metrics) {
  static const json empty = json::object();
  const json& r = report.is_object() ? report : empty;
  std::string title = "dsft evaluation report";
  std::string model = str(r, "model");
  if (!model.empty()) title += " \u2014 " + model;
  std::string s;
  s += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  // Nothing may load from elsewhere: the report is read offline and may hold private data.
  s +=
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
      "img-src data:\">\n";
  s += "<title>" + escape(title) + "</title>\n<style>" + kCss + "</style>\n</head>\n<body>\n";
  s += header(r);
  s += gates_section(r);
  s += perplexity_section(r);
  s += accuracy_section(r);
  s += ab_section(r);
  s += training_section(r, metrics);
  s += speed_section(r);
  s += "<h2 id=\"data\">Data</h2>\n<details><summary>report.json</summary><pre>" +
       escape(r.dump(2, ' ', false, json::error_handler_t::replace)) + "</pre></details>\n";
  s += "</body>\n</html>\n";
  return s;
}

}  // namespace dsft::eval
