// Early stopping on an evaluation metric, as HF's EarlyStoppingCallback: stop after `patience`
// evaluations that did not beat the best so far by more than `threshold`. Torch-free.
#pragma once
#include <cstdint>

namespace dsft::train {

struct EarlyStoppingState {
  bool has_best = false;
  double best = 0.0;       // best metric seen (strictly better, threshold or not)
  int64_t bad_evals = 0;   // evaluations in a row without a threshold-beating improvement
};

class EarlyStopping {
 public:
  // patience 0 disables stopping (the best metric is still tracked, for load_best_model_at_end).
  EarlyStopping(int64_t patience, double threshold, bool greater_is_better);

  // Records one evaluation; returns whether `metric` is the best so far (so the caller can mark
  // the checkpoint it saves now as the best one). NaN never improves.
  bool update(double metric);
  bool should_stop() const { return patience_ > 0 && state_.bad_evals >= patience_; }

  const EarlyStoppingState& state() const { return state_; }
  void set_state(const EarlyStoppingState& s) { state_ = s; }

 private:
  int64_t patience_;
  double threshold_;
  bool greater_is_better_;
  EarlyStoppingState state_;
};

}  // namespace dsft::train
