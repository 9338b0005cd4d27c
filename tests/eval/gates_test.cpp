// Gates: parsing (operators, several gates, bad syntax, unknown metrics with a suggestion), the
// metrics a report yields, pass/fail and the one-line reason.
#include "dsft/eval/gates.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dsft/util/error.h"

using namespace dsft;
using namespace dsft::eval;

TEST(Gates, ParsesEveryOperatorAndCommaSeparatedLists) {
  const auto g = parse_gates({"ppl_drop>=0.15, exact_match>0.6", "ppl<=20,rouge_l<1", "mc_accuracy==1"});
  ASSERT_EQ(g.size(), 5u);
  EXPECT_EQ(g[0].metric, "ppl_drop");
  EXPECT_EQ(g[0].op, ">=");
  EXPECT_DOUBLE_EQ(g[0].threshold, 0.15);
  EXPECT_EQ(g[1].op, ">");
  EXPECT_EQ(g[1].expr, "exact_match>0.6");
  EXPECT_EQ(g[2].op, "<=");
  EXPECT_EQ(g[3].op, "<");
  EXPECT_EQ(g[4].op, "==");
  EXPECT_DOUBLE_EQ(g[4].threshold, 1.0);
}

TEST(Gates, MalformedGatesAndUnknownMetricsAreUsageErrors) {
  EXPECT_THROW(parse_gates({"ppl_drop"}), UsageError);
  EXPECT_THROW(parse_gates({"ppl_drop>=abc"}), UsageError);
  EXPECT_THROW(parse_gates({">=0.5"}), UsageError);
  try {
    parse_gates({"exact_mach>=0.5"});
    FAIL() << "no error for an unknown metric";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("exact_mach"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("exact_match"), std::string::npos) << e.what();
  }
}

TEST(Gates, ValuesComeFromTheReport) {
  const auto report = nlohmann::json::parse(R"({
    "perplexity": {"base": {"ppl": 100.0, "loss": 4.6}, "tuned": {"ppl": 60.0, "loss": 4.09},
                   "relative_change": -0.4},
    "accuracy": {"n": 10, "exact_match": 0.5, "normalized_match": 0.6, "contains": 0.7, "rouge_l": 0.8,
                 "multiple_choice": {"n": 4, "accuracy": 0.75}},
    "speed": {"prefill_tokens_per_s": 1000, "decode_tokens_per_s": 50, "time_to_first_token_ms": 12,
              "peak_memory_bytes": 104857600},
    "ab": {"pooled": {"n": 30, "win": 18, "win_rate": 0.6, "tie_rate": 0.1, "loss_rate": 0.3}, "fleiss_kappa": 0.42}
  })");
  const auto v = gate_values(report);
  EXPECT_DOUBLE_EQ(v.at("ppl"), 60.0);
  EXPECT_DOUBLE_EQ(v.at("base_ppl"), 100.0);
  EXPECT_DOUBLE_EQ(v.at("ppl_drop"), 0.4);
  EXPECT_DOUBLE_EQ(v.at("exact_match"), 0.5);
  EXPECT_DOUBLE_EQ(v.at("rouge_l"), 0.8);
  EXPECT_DOUBLE_EQ(v.at("mc_accuracy"), 0.75);
  EXPECT_DOUBLE_EQ(v.at("decode_tokens_per_s"), 50.0);
  EXPECT_DOUBLE_EQ(v.at("peak_memory_mb"), 100.0);
  EXPECT_DOUBLE_EQ(v.at("win_rate"), 0.6);
  EXPECT_DOUBLE_EQ(v.at("loss_rate"), 0.3);
  EXPECT_DOUBLE_EQ(v.at("kappa"), 0.42);

  // Without an adapter the base is the evaluated model: ppl is its perplexity, no drop.
  const auto base_only =
      gate_values(nlohmann::json::parse(R"({"perplexity": {"base": {"ppl": 7.0, "loss": 1.9}}})"));
  EXPECT_DOUBLE_EQ(base_only.at("ppl"), 7.0);
  EXPECT_EQ(base_only.count("ppl_drop"), 0u);
  EXPECT_EQ(base_only.count("win_rate"), 0u);
  EXPECT_EQ(base_only.count("kappa"), 0u);
}

TEST(Gates, PassAndFailWithAReasonNamingGateAndValue) {
  const std::map<std::string, double> values = {{"ppl_drop", 0.2}, {"exact_match", 0.5}};
  auto r = evaluate_gates(parse_gates({"ppl_drop>=0.15,exact_match>=0.5"}), values);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(r[0].passed);
  EXPECT_TRUE(r[1].passed);
  EXPECT_EQ(first_failure(r), "");

  r = evaluate_gates(parse_gates({"ppl_drop>=0.15,exact_match>0.5"}), values);
  EXPECT_TRUE(r[0].passed);
  EXPECT_FALSE(r[1].passed);
  const std::string why = first_failure(r);
  EXPECT_NE(why.find("exact_match>0.5"), std::string::npos) << why;
  EXPECT_NE(why.find("0.5"), std::string::npos) << why;

  r = evaluate_gates(parse_gates({"ppl_drop<0.1"}), values);
  EXPECT_FALSE(r[0].passed);
  r = evaluate_gates(parse_gates({"ppl_drop==0.2"}), values);
  EXPECT_TRUE(r[0].passed);
}

TEST(Gates, AMetricTheRunDidNotComputeIsAUsageError) {
  const std::map<std::string, double> values = {{"ppl", 12.0}};
  try {
    evaluate_gates(parse_gates({"ppl_drop>=0.15"}), values);
    FAIL() << "no error for a metric the run did not compute";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("ppl_drop"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--baseline"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(require_available(parse_gates({"ppl<20"}), {"ppl", "loss"}));
  EXPECT_THROW(require_available(parse_gates({"win_rate>0.5"}), {"ppl", "loss"}), UsageError);
}
