// The statistics side of the blind A/B comparison: reads rater sheets (CSV), unblinds them with
// key.json and aggregates win/tie/loss of the tuned model with Wilson intervals, per rater,
// pooled and per category, plus Fleiss' kappa for agreement between raters.
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "dsft/eval/ab_sheet.h"
#include "dsft/eval/text_metrics.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/strings.h"

namespace dsft::eval {
namespace {

using nlohmann::json;

enum class Outcome { win, tie, loss };  // of the tuned model against the base

struct CsvRecord {
  std::vector<std::string> fields;
  size_t row = 0;  // 1-based record number, the header being row 1: what a spreadsheet shows
};

// RFC 4180 with the usual leniencies: LF or CRLF line ends, a leading UTF-8 BOM, quotes only
// where a field starts with one.
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& path) {
  std::vector<CsvRecord> records;
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  size_t row = 0;
  while (i < text.size()) {
    CsvRecord rec;
    rec.row = ++row;
    for (;;) {
      std::string field;
      if (i < text.size() && text[i] == '"') {
        ++i;
        for (;;) {
          if (i >= text.size())
            throw Error(path + " row " + std::to_string(rec.row) +
                        ": a quoted field is never closed (a '\"' inside a field must be written '\"\"')");
          if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          field += text[i++];
        }
        // Text after the closing quote (`"a"b`) is kept rather than rejected, as spreadsheets do.
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') field += text[i++];
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') field += text[i++];
      }
      rec.fields.push_back(std::move(field));
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '\r') ++i;
      if (i < text.size() && text[i] == '\n') ++i;
      break;
    }
    records.push_back(std::move(rec));
  }
  return records;
}

std::string lower_ascii(std::string s) {
  for (char& ch : s)
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  return s;
}

enum class Pick { a, b, tie, none };

// What a rater wrote, read generously: case, full-width letters and punctuation do not matter.
Pick parse_rating(const std::string& raw) {
  std::string t = util::trim(raw);
  if (t.empty()) return Pick::none;
  if (t == "=" || t == "==" || t == "\xEF\xBC\x9D") return Pick::tie;  // "=", "==", full-width "＝"
  std::string n = normalize_answer(t);
  static const std::set<std::string> a = {"a",     "a better", "a is better", "better a", "prefer a",
                                          "a更好", "a好",      "a较好",       "选a"};
  static const std::set<std::string> b = {"b",     "b better", "b is better", "better b", "prefer b",
                                          "b更好", "b好",      "b较好",       "选b"};
  static const std::set<std::string> tie = {
      "tie", "t",    "same", "equal", "draw", "both",   "neither", "no preference",
      "平",  "平局", "相同", "一样",  "持平", "差不多", "都好",    "都不好"};
  if (a.count(n)) return Pick::a;
  if (b.count(n)) return Pick::b;
  if (tie.count(n)) return Pick::tie;
  throw std::invalid_argument(t);
}

struct KeyItem {
  bool a_is_tuned = false;
  std::string category;
};

std::map<std::string, KeyItem> read_key(const std::string& path) {
  json key;
  try {
    key = json::parse(util::read_file(path));
  } catch (const json::parse_error& e) {
    throw Error(path + ": not valid JSON (" + e.what() +
                "); it should be the key.json written with the sheet");
  }
  if (!key.is_object() || !key.contains("items") || !key["items"].is_object())
    throw Error(path + ": no \"items\" object; it should be the key.json written with the sheet");
  std::map<std::string, KeyItem> items;
  for (auto it = key["items"].begin(); it != key["items"].end(); ++it) {
    const json& v = it.value();
    std::string a = v.is_object() && v.contains("a") && v["a"].is_string() ? v["a"].get<std::string>() : "";
    if (a != "base" && a != "tuned")
      throw Error(path + ": item '" + it.key() +
                  "' has \"a\": " + (v.is_object() && v.contains("a") ? v["a"].dump() : "missing") +
                  ", expected \"base\" or \"tuned\"");
    KeyItem k;
    k.a_is_tuned = a == "tuned";
    if (v.contains("category") && v["category"].is_string()) k.category = v["category"].get<std::string>();
    items[it.key()] = k;
  }
  if (items.empty()) throw Error(path + ": the key holds no items");
  return items;
}

struct Counts {
  int64_t win = 0, tie = 0, loss = 0;
  int64_t n() const { return win + tie + loss; }
  void add(Outcome o) { (o == Outcome::win ? win : o == Outcome::tie ? tie : loss) += 1; }
};

json interval_json(int64_t k, int64_t n) {
  if (n == 0) return nullptr;
  Interval iv = wilson_interval(k, n);
  return json::array({iv.low, iv.high});
}

json rate(int64_t k, int64_t n) {
  return n ? json(static_cast<double>(k) / static_cast<double>(n)) : json(nullptr);
}

json counts_json(const Counts& c) {
  int64_t n = c.n(), decided = c.win + c.loss;
  return {{"n", n},
          {"win", c.win},
          {"tie", c.tie},
          {"loss", c.loss},
          {"win_rate", rate(c.win, n)},
          {"win_ci", interval_json(c.win, n)},
          {"tie_rate", rate(c.tie, n)},
          {"tie_ci", interval_json(c.tie, n)},
          {"loss_rate", rate(c.loss, n)},
          {"loss_ci", interval_json(c.loss, n)},
          {"preference", rate(c.win, decided)},
          {"preference_ci", interval_json(c.win, decided)}};
}

struct RaterSheet {
  std::string path;
  std::map<std::string, Outcome> outcomes;  // item -> unblinded outcome
  size_t blank = 0;                         // rows left without a rating
};

RaterSheet read_sheet(const std::string& path, const std::map<std::string, KeyItem>& key) {
  RaterSheet sheet;
  sheet.path = path;
  std::vector<CsvRecord> records = parse_csv(util::read_file(path), path);
  if (records.empty())
    throw Error(path + ": the rating sheet is empty (expected a header row item,...,rating,...)");
  int item_col = -1, rating_col = -1;
  const auto& header = records[0].fields;
  for (size_t c = 0; c < header.size(); ++c) {
    std::string h = lower_ascii(util::trim(header[c]));
    if (h == "item" && item_col < 0) item_col = static_cast<int>(c);
    if (h == "rating" && rating_col < 0) rating_col = static_cast<int>(c);
  }
  if (item_col < 0 || rating_col < 0)
    throw Error(path + ": the header row has no '" + std::string(item_col < 0 ? "item" : "rating") +
                "' column; keep the header of the sheet.csv you were given");
  std::map<std::string, size_t> seen_row;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    bool blank_row = true;
    for (const auto& f : rec.fields) blank_row = blank_row && util::trim(f).empty();
    if (blank_row) continue;
    auto field = [&](int col) {
      return col < static_cast<int>(rec.fields.size()) ? rec.fields[col] : std::string();
    };
    std::string item = util::trim(field(item_col));
    auto k = key.find(item);
    if (k == key.end())
      throw Error(path + " row " + std::to_string(rec.row) + ": item '" + item +
                  "' is not in the key; was this sheet written with a different key.json?");
    auto [prev, fresh] = seen_row.emplace(item, rec.row);
    if (!fresh)
      throw Error(path + " row " + std::to_string(rec.row) + ": item '" + item +
                  "' was already rated in row " + std::to_string(prev->second));
    std::string value = field(rating_col);
    Pick pick;
    try {
      pick = parse_rating(value);
    } catch (const std::invalid_argument&) {
      throw Error(path + " row " + std::to_string(rec.row) + ": rating '" + util::trim(value) +
                  "' for item '" + item +
                  "' is not A, B or tie (also accepted: a, b, =, t, \"A better\", \"B better\", same, 平局)");
    }
    if (pick == Pick::none) {
      ++sheet.blank;
      continue;
    }
    Outcome o = pick == Pick::tie                           ? Outcome::tie
                : (pick == Pick::a) == k->second.a_is_tuned ? Outcome::win
                                                            : Outcome::loss;
    sheet.outcomes[item] = o;
  }
  return sheet;
}

}  // namespace

Interval wilson_interval(int64_t successes, int64_t n, double z) {
  if (n < 0 || successes < 0 || successes > n)
    throw Error("Wilson interval: expected 0 <= successes <= n (got " + std::to_string(successes) + " of " +
                std::to_string(n) + ")");
  if (n == 0) return {0.0, 1.0};  // no observations: every rate is possible
  double nn = static_cast<double>(n), p = static_cast<double>(successes) / nn, z2 = z * z;
  double denom = 1 + z2 / nn;
  double center = (p + z2 / (2 * nn)) / denom;
  double half = z * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
  // Clamp rounding at the ends: 0 of n has a lower bound of exactly 0, n of n an upper of 1.
  return {successes == 0 ? 0.0 : std::max(0.0, center - half),
          successes == n ? 1.0 : std::min(1.0, center + half)};
}

double fleiss_kappa(const std::vector<std::vector<int>>& counts) {
  if (counts.empty()) throw Error("Fleiss' kappa: there are no items");
  const size_t k = counts[0].size();
  if (k < 2) throw Error("Fleiss' kappa: expected at least two categories (got " + std::to_string(k) + ")");
  int64_t raters = -1;
  std::vector<double> col(k, 0.0);
  double p_bar = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i].size() != k)
      throw Error("Fleiss' kappa: item " + std::to_string(i + 1) + " has " +
                  std::to_string(counts[i].size()) + " categories, item 1 has " + std::to_string(k));
    int64_t n = 0, sq = 0;
    for (size_t j = 0; j < k; ++j) {
      if (counts[i][j] < 0)
        throw Error("Fleiss' kappa: item " + std::to_string(i + 1) + " has a negative count");
      n += counts[i][j];
      sq += static_cast<int64_t>(counts[i][j]) * counts[i][j];
      col[j] += counts[i][j];
    }
    if (raters < 0) raters = n;
    if (n != raters)
      throw Error("Fleiss' kappa: item " + std::to_string(i + 1) + " has " + std::to_string(n) +
                  " ratings, item 1 has " + std::to_string(raters) +
                  "; every item needs the same number of raters");
    if (n < 2)
      throw Error("Fleiss' kappa: expected at least two raters per item (got " + std::to_string(n) + ")");
    p_bar += static_cast<double>(sq - n) / static_cast<double>(n * (n - 1));
  }
  const double items = static_cast<double>(counts.size());
  p_bar /= items;
  double p_e = 0;
  for (double c : col) {
    double p = c / (items * static_cast<double>(raters));
    p_e += p * p;
  }
  // All ratings in one category: agreement is perfect but chance explains all of it.
  if (1.0 - p_e < 1e-12) return std::numeric_limits<double>::quiet_NaN();
  return (p_bar - p_e) / (1.0 - p_e);
}

nlohmann::json aggregate_ratings(const std::string& key_path, const std::vector<std::string>& rating_csvs) {
  if (rating_csvs.size() < 3)
    throw Error("A/B aggregation needs rating sheets from at least three raters (got " +
                std::to_string(rating_csvs.size()) + "); one or two opinions are not a review");
  {
    std::set<std::string> unique;
    for (const auto& p : rating_csvs) {
      // The same file under two spellings counts twice otherwise; a path that cannot be resolved
      // is compared as written and reported when it is read.
      std::error_code ec;
      std::string canon = std::filesystem::weakly_canonical(p, ec).string();
      if (!unique.insert(ec ? p : canon).second)
        throw Error("A/B aggregation: rating sheet " + p + " is given twice");
    }
  }
  const std::map<std::string, KeyItem> key = read_key(key_path);
  std::vector<RaterSheet> sheets;
  for (const auto& p : rating_csvs) sheets.push_back(read_sheet(p, key));

  // Rater names from file names, falling back to whole paths where two files share a name.
  std::vector<std::string> names;
  std::map<std::string, int> name_count;
  for (const auto& s : sheets) {
    names.push_back(std::filesystem::path(s.path).stem().string());
    ++name_count[names.back()];
  }
  for (size_t i = 0; i < names.size(); ++i)
    if (name_count[names[i]] > 1) names[i] = sheets[i].path;

  bool any_category = false;
  for (const auto& [id, k] : key) any_category = any_category || !k.category.empty();

  Counts pooled;
  std::map<std::string, Counts> per_category;
  json raters = json::array();
  for (size_t i = 0; i < sheets.size(); ++i) {
    Counts c;
    for (const auto& [item, o] : sheets[i].outcomes) {
      c.add(o);
      pooled.add(o);
      if (any_category) {
        const std::string& cat = key.at(item).category;
        per_category[cat.empty() ? "uncategorised" : cat].add(o);
      }
    }
    json r = counts_json(c);
    r["name"] = names[i];
    r["file"] = sheets[i].path;
    r["unrated"] = static_cast<int64_t>(key.size()) - c.n();
    raters.push_back(std::move(r));
  }

  // Kappa over the items every rater rated: Fleiss' kappa needs the same raters per item.
  std::vector<std::vector<int>> table;
  for (const auto& [item, k] : key) {
    std::vector<int> row(3, 0);
    bool all = true;
    for (const auto& s : sheets) {
      auto it = s.outcomes.find(item);
      if (it == s.outcomes.end()) {
        all = false;
        break;
      }
      row[it->second == Outcome::win ? 0 : it->second == Outcome::tie ? 1 : 2] += 1;
    }
    if (all) table.push_back(row);
  }
  double kappa = table.empty() ? std::numeric_limits<double>::quiet_NaN() : fleiss_kappa(table);

  json out;
  out["key"] = key_path;
  out["n_items"] = key.size();
  out["raters"] = std::move(raters);
  out["pooled"] = counts_json(pooled);
  if (any_category) {
    out["per_category"] = json::object();
    for (const auto& [cat, c] : per_category) out["per_category"][cat] = counts_json(c);
  }
  out["fleiss_kappa"] = std::isfinite(kappa) ? json(kappa) : json(nullptr);
  out["kappa_items"] = table.size();
  out["kappa_raters"] = sheets.size();
  out["kappa_categories"] = json::array({"tuned better", "tie", "base better"});
  return out;
}

}  // namespace dsft::eval
