// Rater statistics: Fleiss' kappa against the worked example on Wikipedia's "Fleiss' kappa" page,
// Wilson intervals against published values, and the unblinding of a shuffled sheet whose
// answers the test knows, with hand-computed rates and kappa; plus the errors raters will meet.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include "ab_test_util.h"
#include "dsft/eval/ab_sheet.h"
#include "dsft/util/error.h"

namespace dsft::eval {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using test::error_of;

TEST(FleissKappa, WikipediaWorkedExample) {
  // 10 subjects, 14 raters, 5 categories: P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210.
  std::vector<std::vector<int>> t = {{0, 0, 0, 0, 14}, {0, 2, 6, 4, 2}, {0, 0, 3, 5, 6}, {0, 3, 9, 2, 0},
                                     {2, 2, 8, 1, 1},  {7, 7, 0, 0, 0}, {3, 2, 6, 3, 0}, {2, 5, 3, 2, 2},
                                     {6, 5, 2, 1, 0},  {0, 2, 2, 3, 7}};
  EXPECT_NEAR(fleiss_kappa(t), 0.20993070442195522, 1e-12);
  EXPECT_NEAR(fleiss_kappa(t), 0.210, 5e-4);
}

TEST(FleissKappa, PerfectAndChanceAgreement) {
  EXPECT_DOUBLE_EQ(fleiss_kappa({{3, 0}, {0, 3}, {3, 0}, {0, 3}}), 1.0);
  // Every rating in one category: kappa is undefined.
  EXPECT_TRUE(std::isnan(fleiss_kappa({{3, 0, 0}, {3, 0, 0}})));
  // Two raters who always disagree on two balanced categories: P-bar = 0, P_e = 1/2, kappa = -1.
  EXPECT_DOUBLE_EQ(fleiss_kappa({{1, 1}, {1, 1}}), -1.0);
}

TEST(FleissKappa, RejectsInconsistentTables) {
  EXPECT_THROW(fleiss_kappa({}), Error);
  EXPECT_NE(error_of([] {
              fleiss_kappa({{2, 1}, {1, 1}});
            }).find("same number of raters"),
            std::string::npos);
  EXPECT_THROW(fleiss_kappa({{1, 0}, {0, 1}}), Error);  // one rater per item
  EXPECT_THROW(fleiss_kappa({{1, 1}, {1, 1, 0}}), Error);
}

TEST(WilsonInterval, KnownValues) {
  // R: prop.test(8, 10, correct = FALSE)$conf.int
  Interval a = wilson_interval(8, 10);
  EXPECT_NEAR(a.low, 0.4901625, 1e-7);
  EXPECT_NEAR(a.high, 0.9433178, 1e-7);
  // Newcombe (1998), Statistics in Medicine 17:857, example 81/263: 0.2553 to 0.3662.
  Interval b = wilson_interval(81, 263);
  EXPECT_NEAR(b.low, 0.2553, 5e-5);
  EXPECT_NEAR(b.high, 0.3662, 5e-5);
  // 0 of n: [0, z^2 / (n + z^2)].
  Interval c = wilson_interval(0, 10);
  EXPECT_EQ(c.low, 0.0);
  EXPECT_NEAR(c.high, 3.841458820694124 / 13.841458820694124, 1e-12);
  Interval d = wilson_interval(10, 10);
  EXPECT_NEAR(d.low, 1 - c.high, 1e-12);
  EXPECT_EQ(d.high, 1.0);
  Interval e = wilson_interval(0, 0);
  EXPECT_EQ(e.low, 0.0);
  EXPECT_EQ(e.high, 1.0);
  EXPECT_THROW(wilson_interval(11, 10), Error);
  EXPECT_THROW(wilson_interval(-1, 10), Error);
}

// Four items whose answers say which model wrote them. Each rater's verdict is given in terms of
// the models (T = tuned better, = tie, B = base better) and written as A/B by reading the
// shuffled sheet, just as a rater would.
struct Fixture {
  test::TempDir dir;
  std::vector<std::vector<std::string>> sheet;  // parsed sheet.csv
  std::string key;

  Fixture() {
    std::vector<AbItem> items = {
        {"triage-1", "p1", "BASE answer 1", "TUNED answer 1", "triage"},
        {"triage-2", "p2, \"quoted\"\nsecond line", "BASE answer 2", "TUNED answer 2", "triage"},
        {"dose-1", "p3", "BASE answer 3", "TUNED answer 3", "dosage"},
        {"dose-2", "p4", "BASE answer 4", "TUNED answer 4", "dosage"}};
    write_ab_sheet(items, 2026, (dir.path / "ab").string(), false);
    sheet = test::parse_csv(test::slurp(dir.path / "ab" / "sheet.csv").substr(3));
    key = (dir.path / "ab" / "key.json").string();
  }

  // verdicts[i] in item order; `spell` turns the letter a rater picks into what they type.
  std::string rater(
      const std::string& name, const std::vector<char>& verdicts,
      const std::function<std::string(char)>& spell = [](char c) { return std::string(1, c); }) {
    std::vector<std::vector<std::string>> rows = {sheet[0]};
    for (size_t i = 0; i < verdicts.size(); ++i) {
      std::vector<std::string> row = sheet[i + 1];
      bool a_is_tuned = row[2].rfind("TUNED", 0) == 0;
      char pick = verdicts[i] == '=' ? '=' : (verdicts[i] == 'T') == a_is_tuned ? 'A' : 'B';
      row[4] = pick == '=' ? spell('=') : spell(pick);
      rows.push_back(row);
    }
    std::string path = (dir.path / (name + ".csv")).string();
    test::spit(path, test::write_csv(rows));
    return path;
  }
};

TEST(AggregateRatings, UnblindsAShuffledSheet) {
  Fixture f;
  // The sheet really is shuffled: with this seed both orders occur.
  int tuned_first = 0;
  for (size_t i = 1; i < f.sheet.size(); ++i) tuned_first += f.sheet[i][2].rfind("TUNED", 0) == 0;
  ASSERT_GT(tuned_first, 0);
  ASSERT_LT(tuned_first, 4);

  // Verdicts per item (triage-1, triage-2, dose-1, dose-2):
  //   alice: T T = B     bob: T T = B     carol: T B T B
  std::string alice = f.rater("alice", {'T', 'T', '=', 'B'});
  std::string bob = f.rater("bob", {'T', 'T', '=', 'B'}, [](char c) {
    return c == 'A' ? std::string("a better") : c == 'B' ? std::string("Ｂ") : std::string("tie");
  });
  std::string carol = f.rater("carol", {'T', 'B', 'T', 'B'}, [](char c) {
    return c == 'A' ? std::string(" A ") : c == 'B' ? std::string("B更好") : std::string("平局");
  });
  json r = aggregate_ratings(f.key, {alice, bob, carol});

  // Pooled: wins 2+2+2 = 6, ties 1+1+0 = 2, losses 1+1+2 = 4 of 12.
  EXPECT_EQ(r["pooled"]["n"], 12);
  EXPECT_EQ(r["pooled"]["win"], 6);
  EXPECT_EQ(r["pooled"]["tie"], 2);
  EXPECT_EQ(r["pooled"]["loss"], 4);
  EXPECT_DOUBLE_EQ(r["pooled"]["win_rate"].get<double>(), 0.5);
  Interval w = wilson_interval(6, 12);
  EXPECT_DOUBLE_EQ(r["pooled"]["win_ci"][0].get<double>(), w.low);
  EXPECT_DOUBLE_EQ(r["pooled"]["win_ci"][1].get<double>(), w.high);
  EXPECT_DOUBLE_EQ(r["pooled"]["preference"].get<double>(), 0.6);  // 6 / (6 + 4)

  ASSERT_EQ(r["raters"].size(), 3u);
  EXPECT_EQ(r["raters"][0]["name"], "alice");
  EXPECT_EQ(r["raters"][0]["win"], 2);
  EXPECT_EQ(r["raters"][0]["tie"], 1);
  EXPECT_EQ(r["raters"][0]["loss"], 1);
  EXPECT_EQ(r["raters"][1]["win"], 2);  // bob spelled it differently, same verdicts
  EXPECT_EQ(r["raters"][1]["tie"], 1);
  EXPECT_EQ(r["raters"][2]["win"], 2);
  EXPECT_EQ(r["raters"][2]["loss"], 2);
  EXPECT_EQ(r["raters"][2]["unrated"], 0);

  // triage: T T T / T T B -> 5 wins, 1 loss. dosage: = = T / B B B -> 1 win, 2 ties, 3 losses.
  EXPECT_EQ(r["per_category"]["triage"]["win"], 5);
  EXPECT_EQ(r["per_category"]["triage"]["loss"], 1);
  EXPECT_EQ(r["per_category"]["dosage"]["win"], 1);
  EXPECT_EQ(r["per_category"]["dosage"]["tie"], 2);
  EXPECT_EQ(r["per_category"]["dosage"]["loss"], 3);

  // Counts per item (tuned, tie, base): [3,0,0] [2,0,1] [1,2,0] [0,0,3]. P-bar = 2/3,
  // p = (1/2, 1/6, 1/3), P_e = 7/18, kappa = (2/3 - 7/18) / (11/18) = 5/11.
  EXPECT_EQ(r["kappa_items"], 4);
  EXPECT_NEAR(r["fleiss_kappa"].get<double>(), 5.0 / 11.0, 1e-12);
}

TEST(AggregateRatings, BlankRatingsAreUnratedAndLeaveKappaToCommonItems) {
  Fixture f;
  std::string a = f.rater("a", {'T', 'T', 'T', 'T'});
  std::string b = f.rater("b", {'T', 'T', 'B', 'T'});
  std::string c = f.rater("c", {'T', 'T', 'T', 'T'});
  // c leaves dose-2 blank.
  auto rows = test::parse_csv(test::slurp(c));
  rows[4][4] = "  ";
  test::spit(c, test::write_csv(rows));
  json r = aggregate_ratings(f.key, {a, b, c});
  EXPECT_EQ(r["raters"][2]["n"], 3);
  EXPECT_EQ(r["raters"][2]["unrated"], 1);
  EXPECT_EQ(r["kappa_items"], 3);
  EXPECT_EQ(r["pooled"]["n"], 11);
}

TEST(AggregateRatings, NeedsThreeRaters) {
  Fixture f;
  std::string a = f.rater("a", {'T', 'T', 'T', 'T'});
  std::string b = f.rater("b", {'T', 'T', 'T', 'T'});
  std::string e = error_of([&] { aggregate_ratings(f.key, {a, b}); });
  EXPECT_NE(e.find("at least three raters"), std::string::npos) << e;
  EXPECT_NE(e.find("got 2"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { aggregate_ratings(f.key, {a, b, a}); }).find("given twice"), std::string::npos);
}

TEST(AggregateRatings, UnreadableRatingNamesFileRowAndValue) {
  Fixture f;
  std::string a = f.rater("a", {'T', 'T', 'T', 'T'});
  std::string b = f.rater("b", {'T', 'T', 'T', 'T'});
  std::string c = f.rater("c", {'T', 'T', 'T', 'T'});
  auto rows = test::parse_csv(test::slurp(c));
  rows[4][4] = "maybe";  // the fourth item: row 5 counting the header, though row 3 spans two lines
  test::spit(c, test::write_csv(rows));
  std::string e = error_of([&] { aggregate_ratings(f.key, {a, b, c}); });
  EXPECT_NE(e.find(c + " row 5"), std::string::npos) << e;
  EXPECT_NE(e.find("'maybe'"), std::string::npos) << e;
}

TEST(AggregateRatings, ItemsOutsideTheKeyAndBrokenFilesAreErrors) {
  Fixture f;
  std::string a = f.rater("a", {'T', 'T', 'T', 'T'});
  std::string b = f.rater("b", {'T', 'T', 'T', 'T'});
  std::string c = f.rater("c", {'T', 'T', 'T', 'T'});
  auto rows = test::parse_csv(test::slurp(c));
  rows[2][0] = "ghost";
  test::spit(c, test::write_csv(rows));
  std::string e = error_of([&] { aggregate_ratings(f.key, {a, b, c}); });
  EXPECT_NE(e.find("row 3"), std::string::npos) << e;
  EXPECT_NE(e.find("'ghost' is not in the key"), std::string::npos) << e;

  rows[2][0] = rows[1][0];  // the same item twice
  test::spit(c, test::write_csv(rows));
  EXPECT_NE(error_of([&] {
              aggregate_ratings(f.key, {a, b, c});
            }).find("already rated in row 2"),
            std::string::npos);

  test::spit(c, "item,prompt,answer_a\nx,y,z\n");
  EXPECT_NE(error_of([&] {
              aggregate_ratings(f.key, {a, b, c});
            }).find("no 'rating' column"),
            std::string::npos);

  test::spit(c, "item,rating\n\"triage-1,A\n");
  EXPECT_NE(error_of([&] { aggregate_ratings(f.key, {a, b, c}); }).find("never closed"), std::string::npos);

  test::spit(f.dir.path / "bad-key.json", "{\"items\": {\"x\": {\"a\": \"neither\"}}}");
  EXPECT_NE(error_of([&] {
              aggregate_ratings((f.dir.path / "bad-key.json").string(), {a, b, c});
            }).find("\"neither\""),
            std::string::npos);
  EXPECT_THROW(aggregate_ratings((f.dir.path / "missing.json").string(), {a, b, c}), Error);
  EXPECT_THROW(aggregate_ratings(f.key, {a, b, (f.dir.path / "missing.csv").string()}), Error);
}

}  // namespace
}  // namespace dsft::eval
