// LR schedules: multipliers equal HF transformers' get_scheduler lambdas.
// Expected values were computed with the HF formulas (transformers/optimization.py,
// num_cycles = 0.5) in /usr/bin/python3 and printed with repr(); warmup = 10, total = 100.
#include <gtest/gtest.h>

#include <cmath>

#include "dsft/train/schedule.h"
#include "dsft/util/error.h"

using namespace dsft::train;

namespace {
struct Point {
  int64_t step;
  double linear, cosine, constant_with_warmup;
};
const Point kPoints[] = {
    {0, 0.0, 0.0, 0.0},
    {1, 0.1, 0.1, 0.1},
    {5, 0.5, 0.5, 0.5},
    {9, 0.9, 0.9, 0.9},
    {10, 1.0, 1.0, 1.0},  // first step after warmup
    {11, 0.9888888888888889, 0.9996954135095479, 1.0},
    {37, 0.7, 0.7938926261462366, 1.0},
    {55, 0.5, 0.5, 1.0},
    {99, 0.011111111111111112, 0.00030458649045211894, 1.0},
    {100, 0.0, 0.0, 1.0},
    {120, 0.0, 0.116977778440511, 1.0},  // past the end: HF's cosine rises again, linear stays 0
};
}  // namespace

TEST(LrSchedule, MatchesHfFormulas) {
  for (const auto& p : kPoints) {
    SCOPED_TRACE(p.step);
    EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::linear, p.step, 10, 100), p.linear);
    EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::cosine, p.step, 10, 100), p.cosine);
    EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::constant_with_warmup, p.step, 10, 100), p.constant_with_warmup);
    EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::constant, p.step, 10, 100), 1.0);  // ignores warmup
  }
}

TEST(LrSchedule, NoWarmupStartsAtFullRate) {
  EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::linear, 0, 0, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::cosine, 0, 0, 100), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::cosine, 50, 0, 100), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::constant_with_warmup, 0, 0, 100), 1.0);
  // Warmup longer than the run: still warming up at the last step, no division by zero.
  EXPECT_DOUBLE_EQ(lr_multiplier(SchedulerType::linear, 3, 8, 4), 3.0 / 8.0);
}

TEST(LrSchedule, TracksStepsAndResumes) {
  LrSchedule s(SchedulerType::linear, 2e-4, 2, 10);
  EXPECT_DOUBLE_EQ(s.lr(), 0.0);
  s.advance();
  EXPECT_DOUBLE_EQ(s.lr(), 1e-4);
  s.advance();
  EXPECT_DOUBLE_EQ(s.lr(), 2e-4);
  LrSchedule resumed(SchedulerType::linear, 2e-4, 2, 10);
  resumed.set_step(6);
  EXPECT_DOUBLE_EQ(resumed.lr(), 2e-4 * 4.0 / 8.0);
  EXPECT_THROW(resumed.set_step(-1), dsft::Error);
  EXPECT_THROW(LrSchedule(SchedulerType::linear, 1e-4, 0, 0), dsft::Error);
}
