// Blind A/B comparison: the base and the tuned model answer the same prompts; raters see the
// two answers as "A" and "B" in an order shuffled per item (seeded, recorded), fill a rating
// per item, and `dsft eval --ratings` unblinds and aggregates. Torch-free.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dsft::eval {

// Prompt templates with named placeholders (`{患者主诉}`) filled from a variables record.
// A placeholder the record lacks is an error naming it and the record (`record_label`, e.g.
// "vars.jsonl line 3"); `{{` and `}}` are literal braces; an unclosed `{`, an empty `{}` or a
// single `}` is an error.
std::string fill_prompt_template(const std::string& templ, const std::map<std::string, std::string>& vars,
                                 const std::string& record_label);

struct AbItem {
  std::string id;      // stable item id (from the variables/prompts file)
  std::string prompt;  // the filled prompt the models answered
  std::string base_answer;
  std::string tuned_answer;
  std::string category;  // optional
};

// Writes, into out_dir (created; files 0600, atomically; refuses to overwrite unless `force`):
//   sheet.csv  : item,prompt,answer_a,answer_b,rating,comment  (rating left empty for the rater:
//                A, B or tie; also accepted: a, b, =, t, "A better", ...). UTF-8 with a BOM,
//                CRLF, RFC 4180 quoting; a field starting with = + - @ gets a leading ' so
//                spreadsheets show it as text.
//   sheet.html : the same, readable offline, with a form-free layout raters can print
//   key.json   : {"format": "dsft-ab-key", "version": 1, "seed": ...,
//                 "items": {"<id>": {"a": "base"|"tuned", "category": ...}, ...}}
// The A/B order of each item comes from a PRNG seeded with `seed` (std::mt19937_64, one draw per
// item in order, its top bit set = A is the base); the same items and seed give the same sheet.
// Empty or duplicate item ids are an error.
void write_ab_sheet(const std::vector<AbItem>& items, uint64_t seed, const std::string& out_dir, bool force);

// Unblinds rater sheets with key.json and aggregates: per rater and pooled win/tie/loss rates of
// the tuned model over the base with 95% Wilson intervals, per category, and Fleiss' kappa over
// items every rater rated (categories: tuned better / tie / base better). Fewer than three rater
// files is an error; a rating that cannot be read is an error naming the file, row and value; an
// item missing from the key is an error. An empty rating means "not rated". The result:
// {"key": path, "n_items": N,
//  "pooled": C, "raters": [C + {"name": file stem, "file": path, "unrated": k}, ...],
//  "per_category": {"<category>": C, ...}            (only when the key has categories),
//  "fleiss_kappa": x | null, "kappa_items": n, "kappa_raters": r, "kappa_categories": [...]}
// where C = {"n", "win", "tie", "loss", "win_rate", "win_ci": [lo, hi], "tie_rate", "tie_ci",
//            "loss_rate", "loss_ci", "preference" (win / (win + loss)), "preference_ci"}
// (rates and intervals are null when there is nothing to divide by). "Pooled" and per-category
// counts treat every rating as one observation.
nlohmann::json aggregate_ratings(const std::string& key_path, const std::vector<std::string>& rating_csvs);

// Fleiss' kappa for N items x k categories where counts[i][j] raters put item i in category j;
// every item must have the same number of raters (>= 2), else dsft::Error. NaN when every rating
// falls in one category (chance agreement is 1, kappa undefined).
double fleiss_kappa(const std::vector<std::vector<int>>& counts);

// Wilson score interval for `successes` of `n` at 95% (z for another level); {0, 1} when n = 0.
struct Interval {
  double low = 0.0, high = 0.0;
};
Interval wilson_interval(int64_t successes, int64_t n, double z = 1.959963984540054);

}  // namespace dsft::eval
