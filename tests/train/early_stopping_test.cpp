// Early stopping: patience, threshold, direction, NaN, state restore (HF EarlyStoppingCallback).
#include <gtest/gtest.h>

#include <cmath>

#include "dsft/train/early_stopping.h"
#include "dsft/util/error.h"

using namespace dsft::train;

TEST(EarlyStopping, StopsAfterPatienceEvaluationsWithoutImprovement) {
  EarlyStopping es(2, 0.0, /*greater_is_better=*/false);
  EXPECT_TRUE(es.update(2.0));
  EXPECT_TRUE(es.update(1.5));
  EXPECT_FALSE(es.update(1.6));
  EXPECT_FALSE(es.should_stop());
  EXPECT_TRUE(es.update(1.4));  // improvement resets the counter
  EXPECT_FALSE(es.update(1.4));  // equal is not better
  EXPECT_FALSE(es.should_stop());
  EXPECT_FALSE(es.update(1.45));
  EXPECT_TRUE(es.should_stop());
  EXPECT_DOUBLE_EQ(es.state().best, 1.4);
}

TEST(EarlyStopping, ThresholdAndDirection) {
  EarlyStopping acc(1, 0.01, /*greater_is_better=*/true);
  EXPECT_TRUE(acc.update(0.50));
  // Better, so it is the new best, but not by more than the threshold: patience runs out.
  EXPECT_TRUE(acc.update(0.505));
  EXPECT_TRUE(acc.should_stop());
  EXPECT_DOUBLE_EQ(acc.state().best, 0.505);

  EarlyStopping off(0, 0.0, false);  // patience 0: tracks the best, never stops
  off.update(1.0);
  for (int i = 0; i < 5; ++i) off.update(2.0);
  EXPECT_FALSE(off.should_stop());

  EarlyStopping nan(1, 0.0, false);
  nan.update(1.0);
  EXPECT_FALSE(nan.update(std::nan("")));
  EXPECT_TRUE(nan.should_stop());
  EXPECT_THROW(EarlyStopping(-1, 0.0, false), dsft::Error);
}

TEST(EarlyStopping, RestoresState) {
  EarlyStopping a(3, 0.0, false);
  a.update(1.0);
  a.update(1.1);
  a.update(1.2);
  EarlyStopping b(3, 0.0, false);
  b.set_state(a.state());
  b.update(1.3);
  EXPECT_TRUE(b.should_stop());
}
