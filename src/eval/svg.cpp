// Inline SVG charts for report.html: axes with "nice" ticks, line charts that survive thousands of
// points and non-finite values, grouped bars and stacked bars. Pure string building, no scripts.
#include "svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace dsft::eval::svg {
namespace {

constexpr double kWidth = 720, kHeight = 320;
constexpr double kLeft = 72, kRight = 24, kTop = 54, kBottom = 56;

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Coordinates with two decimals: enough for a 720-wide chart, and keeps the file small.
std::string c(double v) {
  return fmt("%.2f", v);
}

std::string percent(double v) {
  if (!std::isfinite(v)) return "n/a";
  double p = v * 100.0;
  return fmt(std::fabs(p - std::round(p)) < 0.05 ? "%.0f%%" : "%.1f%%", p);
}

// Cuts a label to `n` code points (not bytes: labels are often Chinese) with an ellipsis.
std::string shorten(const std::string& s, size_t n) {
  size_t cps = 0, i = 0;
  while (i < s.size()) {
    if (cps == n) return s.substr(0, i) + "\u2026";
    unsigned char b = static_cast<unsigned char>(s[i]);
    i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    ++cps;
  }
  return s;
}

struct Range {
  double lo, hi;
  std::vector<double> ticks;
};

// Axis range from data: widened when empty or flat, then snapped outward to the tick grid.
Range make_range(double lo, double hi, int target, bool include_zero) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (include_zero) lo = std::min(lo, 0.0), hi = std::max(hi, 0.0);
  if (hi - lo <= std::max(std::fabs(lo), std::fabs(hi)) * 1e-12) {
    // A flat series (or one point): give it room around its value.
    if (lo == 0 && hi == 0) {
      lo = include_zero ? 0.0 : -1.0;
      hi = 1.0;
    } else {
      double pad = std::fabs(lo) * 0.1;
      lo -= pad;
      hi += pad;
    }
  }
  std::vector<double> t = nice_ticks(lo, hi, target);
  Range r{t.front(), t.back(), t};
  return r;
}

std::string svg_open(const std::string& id, double w, double h, const std::string& title) {
  std::string s = "<svg class=\"chart\" data-chart=\"" + escape(id) + "\" viewBox=\"0 0 " + c(w) + " " +
                  c(h) + "\" width=\"" + c(w) + "\" height=\"" + c(h) + "\" role=\"img\" aria-label=\"" +
                  escape(title) + "\">";
  s += "<title>" + escape(title) + "</title>";
  s += "<text class=\"chart-title\" x=\"" + c(w / 2) + "\" y=\"22\" text-anchor=\"middle\">" + escape(title) +
       "</text>";
  return s;
}

// Horizontal grid lines and y tick labels; the y axis line itself.
std::string y_axis(const Range& y, double x0, double x1, double y0, double y1, bool pct,
                   const std::string& label) {
  std::string s;
  auto ymap = [&](double v) { return y1 - (v - y.lo) / (y.hi - y.lo) * (y1 - y0); };
  for (double t : y.ticks) {
    double py = ymap(t);
    s += "<line class=\"grid\" x1=\"" + c(x0) + "\" x2=\"" + c(x1) + "\" y1=\"" + c(py) + "\" y2=\"" + c(py) +
         "\"/>";
    s += "<text class=\"tick\" x=\"" + c(x0 - 6) + "\" y=\"" + c(py + 4) + "\" text-anchor=\"end\">" +
         escape(pct ? percent(t) : format_number(t)) + "</text>";
  }
  s += "<line class=\"axis\" x1=\"" + c(x0) + "\" x2=\"" + c(x0) + "\" y1=\"" + c(y0) + "\" y2=\"" + c(y1) +
       "\"/>";
  if (!label.empty())
    s += "<text class=\"axis-label\" transform=\"translate(16," + c((y0 + y1) / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + escape(label) + "</text>";
  return s;
}

std::string legend(const std::vector<std::pair<std::string, std::string>>& items, double right, double y) {
  // Laid out right to left from `right`; widths estimated from the label length.
  std::string s;
  double x = right;
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    std::string label = shorten(it->first, 24);
    double w = 22 + 7.0 * static_cast<double>(std::min<size_t>(label.size(), 30));
    x -= w;
    s += "<rect class=\"legend-swatch\" x=\"" + c(x) + "\" y=\"" + c(y - 9) +
         "\" width=\"12\" height=\"10\" fill=\"" + escape(it->second) + "\"/>";
    s += "<text class=\"legend\" x=\"" + c(x + 16) + "\" y=\"" + c(y) + "\">" + escape(label) + "</text>";
    x -= 8;
  }
  return s;
}

}  // namespace

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e9 || a < 1e-3) return fmt("%.3g", v);
  if (a >= 1000) return fmt("%.0f", v);
  return fmt("%.4g", v);
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo, lo + 1};
  target = std::max(target, 2);
  double raw = (hi - lo) / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double norm = raw / mag;
  double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  std::vector<double> t;
  for (double k = first; k <= last + 0.5 && t.size() < 50; k += 1) {
    // Rounded to the step's decimals so 3 * 0.2 is 0.6, not 0.6000000000000001; -0 becomes 0.
    double scale = std::pow(10.0, std::max(0.0, -std::floor(std::log10(step))));
    double v = std::round(k * step * scale) / scale;
    if (std::fabs(v) < step * 1e-9) v = 0;
    t.push_back(v);
  }
  if (t.size() < 2) t.push_back(t.back() + step);
  return t;
}

std::vector<std::pair<double, double>> downsample(const std::vector<std::pair<double, double>>& xy,
                                                  size_t max_points) {
  if (xy.size() <= max_points || max_points < 4) return xy;
  // Buckets of consecutive points; each contributes its min and max (by y) in x order, and any
  // non-finite point, so gaps stay where they were.
  size_t n_buckets = (max_points - 2) / 2;
  std::vector<std::pair<double, double>> out;
  out.reserve(max_points + 8);
  out.push_back(xy.front());
  size_t inner = xy.size() - 2;
  for (size_t b = 0; b < n_buckets; ++b) {
    size_t begin = 1 + b * inner / n_buckets, end = 1 + (b + 1) * inner / n_buckets;
    if (begin >= end) continue;
    size_t lo = begin, hi = begin;
    bool gap = false;
    size_t gap_at = begin;
    for (size_t i = begin; i < end; ++i) {
      double y = xy[i].second;
      if (!std::isfinite(y)) {
        if (!gap) gap_at = i;
        gap = true;
        continue;
      }
      if (!std::isfinite(xy[lo].second) || y < xy[lo].second) lo = i;
      if (!std::isfinite(xy[hi].second) || y > xy[hi].second) hi = i;
    }
    std::vector<size_t> keep;
    if (std::isfinite(xy[lo].second)) keep.push_back(lo);
    if (hi != lo && std::isfinite(xy[hi].second)) keep.push_back(hi);
    if (gap) keep.push_back(gap_at);
    std::sort(keep.begin(), keep.end());
    for (size_t i : keep) out.push_back(xy[i]);
  }
  out.push_back(xy.back());
  return out;
}

std::string line_chart(const std::vector<Series>& series, const LineChartOptions& opt) {
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  size_t non_finite = 0;
  for (const auto& s : series)
    for (const auto& [x, y] : s.xy) {
      if (!std::isfinite(x) || !std::isfinite(y)) {
        ++non_finite;
        continue;
      }
      xlo = std::min(xlo, x), xhi = std::max(xhi, x), ylo = std::min(ylo, y), yhi = std::max(yhi, y);
    }
  if (!std::isfinite(xlo))
    return "<p class=\"note\">" + escape(opt.title) + ": no finite values to plot.</p>";

  const double x0 = kLeft, x1 = kWidth - kRight, y0 = kTop, y1 = kHeight - kBottom;
  Range xr = make_range(xlo, xhi, 6, false);
  Range yr = make_range(ylo, yhi, 5, false);
  auto px = [&](double x) { return x0 + (x - xr.lo) / (xr.hi - xr.lo) * (x1 - x0); };
  auto py = [&](double y) { return y1 - (y - yr.lo) / (yr.hi - yr.lo) * (y1 - y0); };

  std::string s = svg_open(opt.id, kWidth, kHeight, opt.title);
  s += y_axis(yr, x0, x1, y0, y1, false, opt.y_label);
  for (double t : xr.ticks) {
    double x = px(t);
    s += "<line class=\"tick-mark\" x1=\"" + c(x) + "\" x2=\"" + c(x) + "\" y1=\"" + c(y1) + "\" y2=\"" +
         c(y1 + 5) + "\"/>";
    s += "<text class=\"tick\" x=\"" + c(x) + "\" y=\"" + c(y1 + 18) + "\" text-anchor=\"middle\">" +
         escape(format_number(t)) + "</text>";
  }
  s += "<line class=\"axis\" x1=\"" + c(x0) + "\" x2=\"" + c(x1) + "\" y1=\"" + c(y1) + "\" y2=\"" + c(y1) +
       "\"/>";
  if (!opt.x_label.empty())
    s += "<text class=\"axis-label\" x=\"" + c((x0 + x1) / 2) + "\" y=\"" + c(kHeight - 14) +
         "\" text-anchor=\"middle\">" + escape(opt.x_label) + "</text>";

  std::vector<std::pair<std::string, std::string>> legend_items;
  for (const auto& ser : series) {
    std::vector<std::pair<double, double>> pts = downsample(ser.xy, opt.max_points);
    std::string d, dots;
    bool pen_down = false;
    for (size_t i = 0; i < pts.size(); ++i) {
      auto [x, y] = pts[i];
      if (!std::isfinite(x) || !std::isfinite(y)) {
        pen_down = false;
        continue;
      }
      d += (pen_down ? "L" : "M") + c(px(x)) + " " + c(py(y));
      // A point with no finite neighbour draws no line: give it a dot so it is seen.
      bool prev_ok = i > 0 && std::isfinite(pts[i - 1].first) && std::isfinite(pts[i - 1].second);
      bool next_ok =
          i + 1 < pts.size() && std::isfinite(pts[i + 1].first) && std::isfinite(pts[i + 1].second);
      if (ser.markers || (!prev_ok && !next_ok))
        dots += "<circle class=\"point\" cx=\"" + c(px(x)) + "\" cy=\"" + c(py(y)) + "\" r=\"3\" fill=\"" +
                escape(ser.color) + "\"/>";
      pen_down = true;
    }
    if (d.empty()) continue;
    legend_items.emplace_back(ser.name, ser.color);
    if (!ser.markers)
      s += "<path class=\"series\" data-series=\"" + escape(ser.name) + "\" d=\"" + d +
           "\" fill=\"none\" stroke=\"" + escape(ser.color) +
           "\" stroke-width=\"1.8\" stroke-linejoin=\"round\"/>";
    s += dots;
  }
  if (legend_items.size() > 1) s += legend(legend_items, x1, y0 - 6);
  if (non_finite)
    s += "<text class=\"note\" x=\"" + c(x1) + "\" y=\"" + c(kHeight - 14) + "\" text-anchor=\"end\">" +
         std::to_string(non_finite) + " non-finite value" + (non_finite == 1 ? "" : "s") +
         " not drawn</text>";
  s += "</svg>";
  return s;
}

std::string bar_chart(const std::vector<std::string>& groups, const std::vector<BarSeries>& series,
                      const BarChartOptions& opt) {
  if (groups.empty() || series.empty())
    return "<p class=\"note\">" + escape(opt.title) + ": nothing to plot.</p>";
  double lo = 0, hi = 0;
  for (const auto& ser : series)
    for (double v : ser.values)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  Range yr = opt.y_max > 0 && hi <= opt.y_max && lo >= 0 ? Range{0, opt.y_max, nice_ticks(0, opt.y_max, 5)}
                                                         : make_range(lo, hi, 5, true);
  yr.lo = yr.ticks.front(), yr.hi = yr.ticks.back();

  const double slot = 26;  // bar width + gap
  const double group_w = slot * static_cast<double>(series.size()) + 24;
  const double w = std::max(kWidth, kLeft + kRight + group_w * static_cast<double>(groups.size()));
  const bool slanted = groups.size() > 6;
  const double h = kHeight + (slanted ? 40 : 0);
  const double x0 = kLeft, x1 = w - kRight, y0 = kTop, y1 = h - kBottom - (slanted ? 40 : 0);
  auto py = [&](double v) { return y1 - (v - yr.lo) / (yr.hi - yr.lo) * (y1 - y0); };

  std::string s = svg_open(opt.id, w, h, opt.title);
  s += y_axis(yr, x0, x1, y0, y1, opt.percent, opt.y_label);
  const double gw = (x1 - x0) / static_cast<double>(groups.size());
  const double bar_w = std::min(40.0, (gw - 16) / static_cast<double>(series.size()));
  for (size_t g = 0; g < groups.size(); ++g) {
    double gx = x0 + gw * static_cast<double>(g);
    double start = gx + (gw - bar_w * static_cast<double>(series.size())) / 2;
    for (size_t k = 0; k < series.size(); ++k) {
      double v = g < series[k].values.size() ? series[k].values[g] : std::numeric_limits<double>::quiet_NaN();
      double bx = start + bar_w * static_cast<double>(k);
      std::string label = opt.percent ? percent(v) : format_number(v);
      if (!std::isfinite(v)) {
        s += "<text class=\"value\" x=\"" + c(bx + bar_w / 2) + "\" y=\"" + c(py(0) - 4) +
             "\" text-anchor=\"middle\">n/a</text>";
        continue;
      }
      double top = py(std::max(v, 0.0)), bottom = py(std::min(v, 0.0));
      s += "<rect class=\"bar\" x=\"" + c(bx + 1) + "\" y=\"" + c(top) + "\" width=\"" + c(bar_w - 2) +
           "\" height=\"" + c(std::max(bottom - top, 0.5)) + "\" fill=\"" + escape(series[k].color) +
           "\"><title>" + escape(groups[g] + " \u00b7 " + series[k].name + ": " + label) + "</title></rect>";
      if (bar_w >= 18)
        s += "<text class=\"value\" x=\"" + c(bx + bar_w / 2) + "\" y=\"" +
             c(v >= 0 ? top - 4 : bottom + 12) + "\" text-anchor=\"middle\">" + escape(label) + "</text>";
    }
    double lx = gx + gw / 2;
    std::string name = shorten(groups[g], slanted ? 16 : 24);
    if (slanted)
      s += "<text class=\"tick\" transform=\"translate(" + c(lx) + "," + c(y1 + 14) +
           ") rotate(-35)\" text-anchor=\"end\">" + escape(name) + "</text>";
    else
      s += "<text class=\"tick\" x=\"" + c(lx) + "\" y=\"" + c(y1 + 18) + "\" text-anchor=\"middle\">" +
           escape(name) + "</text>";
  }
  s += "<line class=\"axis\" x1=\"" + c(x0) + "\" x2=\"" + c(x1) + "\" y1=\"" + c(py(0)) + "\" y2=\"" +
       c(py(0)) + "\"/>";
  if (series.size() > 1) {
    std::vector<std::pair<std::string, std::string>> items;
    for (const auto& ser : series) items.emplace_back(ser.name, ser.color);
    s += legend(items, x1, y0 - 6);
  }
  s += "</svg>";
  return s;
}

std::string stacked_bars(const std::vector<std::string>& rows, const std::vector<StackSegment>& segments,
                         const std::vector<std::vector<double>>& values, const std::string& title,
                         const std::string& id) {
  if (rows.empty()) return "<p class=\"note\">" + escape(title) + ": nothing to plot.</p>";
  const double label_w = 170, row_h = 24, gap = 10;
  const double x0 = label_w, x1 = kWidth - kRight, y0 = kTop + 8;
  const double h = y0 + static_cast<double>(rows.size()) * (row_h + gap) + 36;
  const double y1 = h - 36;
  auto px = [&](double f) { return x0 + f * (x1 - x0); };

  std::string s = svg_open(id, kWidth, h, title);
  for (double t : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    s += "<line class=\"grid\" x1=\"" + c(px(t)) + "\" x2=\"" + c(px(t)) + "\" y1=\"" + c(y0 - 4) +
         "\" y2=\"" + c(y1) + "\"/>";
    s += "<text class=\"tick\" x=\"" + c(px(t)) + "\" y=\"" + c(y1 + 16) + "\" text-anchor=\"middle\">" +
         percent(t) + "</text>";
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    double y = y0 + static_cast<double>(r) * (row_h + gap);
    s += "<text class=\"tick\" x=\"" + c(x0 - 8) + "\" y=\"" + c(y + row_h / 2 + 4) +
         "\" text-anchor=\"end\">" + escape(shorten(rows[r], 22)) + "</text>";
    double acc = 0;
    for (size_t k = 0; k < segments.size(); ++k) {
      double f = r < values.size() && k < values[r].size() ? values[r][k] : 0.0;
      if (!std::isfinite(f) || f <= 0) continue;
      f = std::min(f, 1.0 - acc);
      if (f <= 0) break;
      double bx = px(acc), bw = px(acc + f) - bx;
      s += "<rect class=\"bar\" x=\"" + c(bx) + "\" y=\"" + c(y) + "\" width=\"" + c(bw) + "\" height=\"" +
           c(row_h) + "\" fill=\"" + escape(segments[k].color) + "\"><title>" +
           escape(rows[r] + " \u00b7 " + segments[k].name + ": " + percent(f)) + "</title></rect>";
      if (f >= 0.07)
        s += "<text class=\"value inside\" x=\"" + c(bx + bw / 2) + "\" y=\"" + c(y + row_h / 2 + 4) +
             "\" text-anchor=\"middle\">" + percent(f) + "</text>";
      acc += f;
    }
  }
  s += "<line class=\"axis\" x1=\"" + c(x0) + "\" x2=\"" + c(x1) + "\" y1=\"" + c(y1) + "\" y2=\"" + c(y1) +
       "\"/>";
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& seg : segments) items.emplace_back(seg.name, seg.color);
  s += legend(items, x1, kTop - 6);
  s += "</svg>";
  return s;
}

}  // namespace dsft::eval::svg
