// Inline SVG charts for the HTML report: line charts (with downsampling and gaps at non-finite
// values), grouped bar charts and horizontal stacked bars, each with axes and tick labels. The
// output is a standalone <svg> element; every text is HTML-escaped. Private to src/eval.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsft::eval::svg {

// Escapes &, <, >, " and ' for HTML text and attribute values.
std::string escape(std::string_view s);

// A number for people: up to 4 significant digits, "1.2e-05" style for very small or large
// magnitudes, "NaN" / "inf" for non-finite values.
std::string format_number(double v);

// "Nice" tick positions (steps of 1, 2 or 5 times a power of ten) covering [lo, hi], about
// `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

struct Series {
  std::string name;
  std::string color;                          // CSS color
  std::vector<std::pair<double, double>> xy;  // non-finite y values become gaps
  bool markers = false;                       // draw a dot at every (kept) point
};

struct LineChartOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::string id;           // data-chart attribute, so tests and readers can find the chart
  size_t max_points = 400;  // per series, after downsampling
  bool log_y = false;       // only when every finite y is > 0
};

// Picks at most `max_points` of `xy` in order, keeping the first, the last and, for each bucket,
// its lowest and highest y, so spikes survive. Non-finite points are kept (they mark gaps).
std::vector<std::pair<double, double>> downsample(const std::vector<std::pair<double, double>>& xy,
                                                  size_t max_points);

std::string line_chart(const std::vector<Series>& series, const LineChartOptions& opt);

struct BarSeries {
  std::string name;
  std::string color;
  std::vector<double> values;  // one per group; non-finite values draw no bar and print "n/a"
};

struct BarChartOptions {
  std::string title;
  std::string y_label;
  std::string id;
  double y_max = 0.0;    // > 0: fixed top of the axis (1 for rates); otherwise from the data
  bool percent = false;  // tick labels and value labels as percentages
};

// Groups along x (one label each), one bar per series inside each group.
std::string bar_chart(const std::vector<std::string>& groups, const std::vector<BarSeries>& series,
                      const BarChartOptions& opt);

struct StackSegment {
  std::string name;
  std::string color;
};

// One horizontal bar per row, its segments the fractions of row.values (which should sum to 1),
// on a 0..100% axis.
std::string stacked_bars(const std::vector<std::string>& rows, const std::vector<StackSegment>& segments,
                         const std::vector<std::vector<double>>& values, const std::string& title,
                         const std::string& id);

}  // namespace dsft::eval::svg
