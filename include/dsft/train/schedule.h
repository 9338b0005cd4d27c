// Learning-rate schedules with warmup, computed exactly as HF transformers' get_scheduler
// (a LambdaLR multiplier of the base learning rate). Torch-free.
#pragma once
#include <cstdint>

#include "dsft/train/config.h"

namespace dsft::train {

// The multiplier of the base learning rate for the optimizer step that follows `step` completed
// steps (LambdaLR's lr_lambda(step); step 0 is the first update, so linear warmup starts at 0).
//   constant:             1
//   constant_with_warmup: step / warmup during warmup, then 1
//   linear:               warmup, then (total - step) / (total - warmup), floored at 0
//   cosine:               warmup, then 0.5 * (1 + cos(pi * progress)), progress in [0, 1]
// HF ignores warmup for `constant`; so does this.
double lr_multiplier(SchedulerType type, int64_t step, int64_t warmup_steps, int64_t total_steps);

// Holds the schedule of one run; `step` is the number of optimizer steps taken (saved in
// checkpoints so that a resumed run continues the same curve).
class LrSchedule {
 public:
  LrSchedule(SchedulerType type, double base_lr, int64_t warmup_steps, int64_t total_steps);
  // The learning rate for the next optimizer step.
  double lr() const { return base_lr_ * lr_multiplier(type_, step_, warmup_steps_, total_steps_); }
  void advance() { ++step_; }
  int64_t step() const { return step_; }
  void set_step(int64_t step);  // on resume; throws dsft::Error on a negative step
  int64_t warmup_steps() const { return warmup_steps_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  SchedulerType type_;
  double base_lr_;
  int64_t warmup_steps_;
  int64_t total_steps_;
  int64_t step_ = 0;
};

}  // namespace dsft::train
