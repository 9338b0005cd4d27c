// report.html: self-contained (no scripts, no external references), escaped, graceful with
// missing sections, non-finite values, one-point and very long curves; and, in headless
// Chromium, every chart actually draws (path lengths, bar areas, tick labels measured in the
// browser). Also read_metrics_jsonl's errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>

#include "chromium.h"
#include "dsft/eval/report.h"
#include "dsft/util/error.h"
#include "eval/svg.h"

namespace dsft::eval {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "dsft-report-XXXXXX").string();
    path = ::mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t i = s.find(needle); i != std::string::npos; i = s.find(needle, i + 1)) ++n;
  return n;
}

std::vector<json> training_rows(int steps) {
  std::vector<json> rows;
  for (int s = 1; s <= steps; ++s) {
    json r = {{"step", s},
              {"epoch", s / 100.0},
              {"loss", 3.0 * std::exp(-s / 200.0) + 0.5},
              {"lr", 2e-4 * std::min(1.0, s / 50.0)}};
    if (s % 100 == 0) r["eval_loss"] = 3.2 * std::exp(-s / 250.0) + 0.6;
    rows.push_back(r);
  }
  return rows;
}

json full_report() {
  return json::parse(R"({
    "model": "deepseek-tiny <b>&",
    "adapter": "runs/a/adapter", "data": "test.jsonl", "created": "2026-11-28T03:00:00Z",
    "perplexity": {"base": {"ppl": 12.5, "loss": 2.526, "tokens": 40960},
                   "tuned": {"ppl": 8.1, "loss": 2.092, "tokens": 40960}, "relative_change": -0.352},
    "accuracy": {"n": 120, "exact_match": 0.41, "normalized_match": 0.55, "contains": 0.62, "rouge_l": 0.71,
                 "multiple_choice": {"n": 40, "accuracy": 0.675},
                 "per_category": {"分诊": {"n": 60, "exact_match": 0.5, "normalized_match": 0.6, "contains": 0.7, "rouge_l": 0.8},
                                  "<dosage>": {"n": 60, "exact_match": 0.32, "normalized_match": 0.5, "contains": 0.54, "rouge_l": 0.62}}},
    "baseline_accuracy": {"n": 120, "exact_match": 0.2, "normalized_match": 0.3, "contains": 0.35, "rouge_l": 0.5,
                          "multiple_choice": {"n": 40, "accuracy": 0.45}},
    "ab_sheet": {"dir": "sheets/", "items": 30, "seed": 7},
    "speed": {"prefill_tokens_per_s": 5120.5, "decode_tokens_per_s": 48.2, "time_to_first_token_ms": 35.1,
              "peak_memory_bytes": 2147483648},
    "ab": {"n_items": 30, "fleiss_kappa": 0.41, "kappa_items": 30, "kappa_raters": 3,
           "pooled": {"n": 90, "win": 50, "tie": 20, "loss": 20, "win_rate": 0.5556, "win_ci": [0.452, 0.654],
                      "tie_rate": 0.2222, "tie_ci": [0.15, 0.318], "loss_rate": 0.2222, "loss_ci": [0.15, 0.318],
                      "preference": 0.714, "preference_ci": [0.6, 0.81]},
           "raters": [{"name": "alice", "n": 30, "win_rate": 0.6, "tie_rate": 0.2, "loss_rate": 0.2},
                      {"name": "bob", "n": 30, "win_rate": 0.5, "tie_rate": 0.3, "loss_rate": 0.2},
                      {"name": "carol", "n": 30, "win_rate": 0.566, "tie_rate": 0.167, "loss_rate": 0.267}]},
    "gates": [{"expr": "ppl_drop>=0.15", "metric": "ppl_drop", "value": 0.352, "passed": true},
              {"expr": "exact_match>=0.5 && <x>", "metric": "exact_match", "value": 0.41, "passed": false}],
    "training": {"metrics_path": "runs/a/metrics.jsonl"}
  })");
}

TEST(ReadMetricsJsonl, ReadsObjectsAndSkipsBlankLines) {
  TempDir d;
  write(d.path / "m.jsonl", "{\"step\":1,\"loss\":2.5}\n\n{\"step\":2,\"loss\":null,\"lr\":1e-4}\r\n");
  std::vector<json> rows = read_metrics_jsonl((d.path / "m.jsonl").string());
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1]["step"], 2);
  EXPECT_TRUE(rows[1]["loss"].is_null());
}

TEST(ReadMetricsJsonl, ErrorsNameTheFileAndLine) {
  TempDir d;
  std::string path = (d.path / "m.jsonl").string();
  write(path, "{\"step\":1}\n{\"step\":2}\n{\"step\":3,\"lo\n");
  try {
    read_metrics_jsonl(path);
    FAIL() << "a truncated line was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":3:"), std::string::npos) << e.what();
  }
  write(path, "{\"step\":1}\n[1,2]\n");
  EXPECT_THROW(read_metrics_jsonl(path), Error);
  EXPECT_THROW(read_metrics_jsonl((d.path / "missing.jsonl").string()), Error);
}

TEST(RenderReport, IsSelfContainedAndEscaped) {
  std::string html = render_report_html(full_report(), training_rows(300));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find(" src="), std::string::npos);
  EXPECT_EQ(html.find(" href="), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  // User data never reaches the page as markup.
  EXPECT_EQ(html.find("<b>&"), std::string::npos);
  EXPECT_NE(html.find("deepseek-tiny &lt;b&gt;&amp;"), std::string::npos);
  EXPECT_EQ(html.find("<dosage>"), std::string::npos);
  EXPECT_NE(html.find("&lt;dosage&gt;"), std::string::npos);
  EXPECT_EQ(html.find("&& <x>"), std::string::npos);
  EXPECT_NE(html.find("分诊"), std::string::npos);
  // Every section drew its chart.
  for (const char* id : {"loss", "lr", "perplexity", "accuracy", "accuracy-baseline", "ab"})
    EXPECT_NE(html.find(std::string("data-chart=\"") + id + "\""), std::string::npos) << id;
  EXPECT_NE(html.find("Some gates failed"), std::string::npos);
  EXPECT_EQ(count(html, ">pass<"), 1u);
  EXPECT_EQ(count(html, ">fail<"), 1u);
  EXPECT_NE(html.find("-35.2%"), std::string::npos);    // relative perplexity change
  EXPECT_NE(html.find("2048 MiB"), std::string::npos);  // peak memory
  EXPECT_NE(html.find("moderate"), std::string::npos);  // kappa 0.41 in words
  EXPECT_NE(html.find("Accuracy, base vs tuned"), std::string::npos);
  EXPECT_NE(html.find("written to <code>sheets/</code>"), std::string::npos);
}

TEST(RenderReport, EmptyReportSaysSoInsteadOfDrawing) {
  std::string html = render_report_html(json::object(), {});
  EXPECT_EQ(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("No gates were set"), std::string::npos);
  EXPECT_NE(html.find("Perplexity was not measured"), std::string::npos);
  EXPECT_NE(html.find("Task accuracy was not measured"), std::string::npos);
  EXPECT_NE(html.find("No rater sheets were aggregated"), std::string::npos);
  EXPECT_NE(html.find("No training metrics were given"), std::string::npos);
  EXPECT_NE(html.find("Speed was not measured"), std::string::npos);
  // Not even an object: still a page.
  EXPECT_NE(render_report_html(json::array({1, 2}), {}).find("</html>"), std::string::npos);
}

TEST(RenderReport, NonFiniteValuesAndWrongTypesDoNotBreakThePage) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  json r = {
      {"perplexity", {{"base", {{"ppl", inf}}}, {"tuned", {{"ppl", nan}}}}},
      {"accuracy", {{"n", "many"}, {"exact_match", nan}, {"per_category", {{"x", {{"exact_match", 0.5}}}}}}},
      {"speed", {{"decode_tokens_per_s", nullptr}, {"note", "warm cache"}}},
      {"gates", {{{"expr", "x>1"}, {"value", nan}}, 3}},
      {"ab", {{"pooled", {{"n", 0}, {"win_rate", nullptr}}}, {"fleiss_kappa", nullptr}}}};
  std::vector<json> rows = {{{"step", 1}, {"loss", nullptr}},
                            {{"step", 2}, {"loss", 1.5}},
                            {{"step", 3}, {"loss", nan}},
                            {{"step", 4}, {"loss", 1.2}},
                            {{"loss", 1.0}},
                            {{"step", "five"}, {"lr", 1}}};
  std::string html = render_report_html(r, rows);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_NE(html.find("n/a"), std::string::npos);
  EXPECT_NE(html.find("not drawn"), std::string::npos);  // the loss chart counts its gaps
  EXPECT_NE(html.find("without a step number"), std::string::npos);
  EXPECT_NE(html.find("warm cache"), std::string::npos);
  EXPECT_EQ(html.find("nan"), std::string::npos);
  // Two isolated points (between gaps) are drawn as dots, not as zero-length lines.
  EXPECT_EQ(count(html, "class=\"point\""), 2u);
}

TEST(RenderReport, OnePointCurveIsADot) {
  std::string html = render_report_html(json::object(), {{{"step", 7}, {"loss", 2.0}, {"lr", 1e-4}}});
  EXPECT_EQ(count(html, "class=\"point\""), 2u);   // loss and lr
  EXPECT_NE(html.find(">7<"), std::string::npos);  // the step appears as an x tick
}

TEST(RenderReport, LongCurvesAreDownsampled) {
  std::vector<json> rows = training_rows(20000);
  rows[12345]["loss"] = 50.0;  // a spike must survive downsampling
  std::string html = render_report_html(json::object(), rows);
  std::smatch m;
  std::string::const_iterator from = html.cbegin();
  size_t paths = 0;
  std::regex path_re("class=\"series\" data-series=\"([^\"]*)\" d=\"([^\"]*)\"");
  while (std::regex_search(from, html.cend(), m, path_re)) {
    ++paths;
    size_t vertices = count(m[2].str(), "L") + count(m[2].str(), "M");
    EXPECT_LE(vertices, 402u) << m[1];
    EXPECT_GE(vertices, 100u) << m[1];
    from = m.suffix().first;
  }
  EXPECT_EQ(paths, 2u);                             // training loss and learning rate
  EXPECT_LT(html.size(), 200u * 1024u);             // a page, not a data dump
  EXPECT_NE(html.find(">50<"), std::string::npos);  // the y axis reaches the spike
}

TEST(Svg, NiceTicksAndNumbers) {
  EXPECT_EQ(svg::nice_ticks(0, 1, 5), (std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1.0}));
  EXPECT_EQ(svg::nice_ticks(3, 97, 5), (std::vector<double>{0, 20, 40, 60, 80, 100}));
  std::vector<double> t = svg::nice_ticks(1e-5, 2e-4, 5);
  EXPECT_DOUBLE_EQ(t.front(), 0);
  EXPECT_NEAR(t.back(), 2e-4, 1e-12);
  EXPECT_EQ(svg::format_number(0.1234567), "0.1235");
  EXPECT_EQ(svg::format_number(2e-5), "2e-05");
  EXPECT_EQ(svg::format_number(40960), "40960");
  EXPECT_EQ(svg::format_number(std::nan("")), "NaN");
  EXPECT_EQ(svg::escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
}

// The browser's view: each chart's drawn geometry, measured by a script injected into a copy of
// the page (the report itself carries no script), read back from the DOM Chromium dumps.
TEST(RenderReport, ChartsDrawInHeadlessChromium) {
  std::string chromium = test::find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "no chromium binary (install Debian's chromium package)";
  std::string html = render_report_html(full_report(), training_rows(3000));

  const char* probe = R"(<script>
const out = {};
for (const svg of document.querySelectorAll('svg.chart')) {
  const r = {len: 0, area: 0, points: 0, ticks: 0, minx: 1e9, miny: 1e9, maxx: -1e9, maxy: -1e9};
  const vb = svg.viewBox.baseVal; r.w = vb.width; r.h = vb.height;
  const grow = b => { r.minx = Math.min(r.minx, b.x); r.miny = Math.min(r.miny, b.y);
                      r.maxx = Math.max(r.maxx, b.x + b.width); r.maxy = Math.max(r.maxy, b.y + b.height); };
  for (const p of svg.querySelectorAll('path.series')) { r.len += p.getTotalLength(); grow(p.getBBox()); }
  for (const e of svg.querySelectorAll('rect.bar')) { const b = e.getBBox(); r.area += b.width * b.height; grow(b); }
  for (const e of svg.querySelectorAll('circle.point')) { const b = e.getBBox(); if (b.width > 0) r.points++; grow(b); }
  for (const e of svg.querySelectorAll('text.tick')) { const b = e.getBBox(); if (b.width > 0 && b.height > 0) r.ticks++; }
  out[svg.dataset.chart] = r;
}
const pre = document.createElement('pre'); pre.id = 'measure'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>)";
  // The page forbids scripts (Content-Security-Policy); the copy drops that line to be measured.
  std::string copy =
      std::regex_replace(html, std::regex("<meta http-equiv=\"Content-Security-Policy\"[^>]*>"), "");
  ASSERT_NE(copy.find("</body>"), std::string::npos);
  copy.insert(copy.find("</body>"), probe);

  TempDir d;
  write(d.path / "report.html", copy);
  std::string dom =
      test::chromium_dump_dom(chromium, (d.path / "report.html").string(), (d.path / "profile").string());
  std::smatch m;
  ASSERT_TRUE(std::regex_search(dom, m, std::regex("<pre id=\"measure\">([^<]*)</pre>")))
      << "chromium produced no measurement; output starts: " << dom.substr(0, 300);
  json g = json::parse(m[1].str());

  for (const char* id : {"loss", "lr", "perplexity", "accuracy", "accuracy-baseline", "ab"}) {
    ASSERT_TRUE(g.contains(id)) << "chart " << id << " is missing: " << g.dump();
    const json& c = g[id];
    EXPECT_GE(c["ticks"].get<int>(), 3) << id << ": axes need tick labels";
    // Everything drawn lies inside the chart's own box.
    EXPECT_GE(c["minx"].get<double>(), 0) << id;
    EXPECT_GE(c["miny"].get<double>(), 0) << id;
    EXPECT_LE(c["maxx"].get<double>(), c["w"].get<double>()) << id;
    EXPECT_LE(c["maxy"].get<double>(), c["h"].get<double>()) << id;
  }
  // Line charts: the curves span most of the plot width and have real length.
  for (const char* id : {"loss", "lr"}) {
    const json& c = g[id];
    EXPECT_GT(c["len"].get<double>(), 300) << id;
    EXPECT_GT(c["maxx"].get<double>() - c["minx"].get<double>(), 0.7 * c["w"].get<double>()) << id;
    EXPECT_GT(c["maxy"].get<double>() - c["miny"].get<double>(), 0.3 * c["h"].get<double>()) << id;
  }
  EXPECT_EQ(g["loss"]["points"].get<int>(), 30);  // one dot per eval_loss row (every 100 steps)
  // Bar charts: visible bars. Perplexity 12.5 vs 8.1: the base bar is the taller.
  EXPECT_GT(g["perplexity"]["area"].get<double>(), 2000);
  EXPECT_GT(g["accuracy"]["area"].get<double>(), 5000);
  EXPECT_GT(g["accuracy-baseline"]["area"].get<double>(), 5000);
  // A/B: four rows (pooled + three raters) of full-width stacks.
  EXPECT_GT(g["ab"]["area"].get<double>(), 4 * 20 * 400);
}

}  // namespace
}  // namespace dsft::eval
