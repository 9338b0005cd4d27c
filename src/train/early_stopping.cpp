// Early stopping: HF's check_metric_value (strict improvement by more than the threshold resets
// the patience counter) and the Trainer's best-metric rule (any strict improvement is the best).
#include "dsft/train/early_stopping.h"

#include <cmath>
#include <string>

#include "dsft/util/error.h"

namespace dsft::train {

EarlyStopping::EarlyStopping(int64_t patience, double threshold, bool greater_is_better)
    : patience_(patience), threshold_(threshold), greater_is_better_(greater_is_better) {
  if (patience < 0) throw Error("early_stopping_patience must be 0 or more (got " + std::to_string(patience) + ")");
  if (!(threshold >= 0)) throw Error("early_stopping_threshold must be 0 or more");
}

bool EarlyStopping::update(double metric) {
  if (std::isnan(metric)) {
    ++state_.bad_evals;
    return false;
  }
  const bool better = !state_.has_best || (greater_is_better_ ? metric > state_.best : metric < state_.best);
  const bool enough = !state_.has_best || (better && std::fabs(metric - state_.best) > threshold_);
  state_.bad_evals = enough ? 0 : state_.bad_evals + 1;
  if (better) {
    state_.best = metric;
    state_.has_best = true;
  }
  return better;
}

}  // namespace dsft::train
