// Learning-rate multipliers, transcribed from transformers.optimization (get_*_schedule_with_warmup)
// with the same integer/float arithmetic so that the numbers agree to the last bit.
#include "dsft/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "dsft/util/error.h"

namespace dsft::train {

double lr_multiplier(SchedulerType type, int64_t step, int64_t warmup_steps, int64_t total_steps) {
  const double s = static_cast<double>(step);
  if (type == SchedulerType::constant) return 1.0;
  if (step < warmup_steps) return s / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  switch (type) {
    case SchedulerType::constant_with_warmup:
      return 1.0;
    case SchedulerType::linear:
      return std::max(0.0, static_cast<double>(total_steps - step) /
                               static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)));
    case SchedulerType::cosine: {
      const double progress = static_cast<double>(step - warmup_steps) /
                              static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
      const double num_cycles = 0.5;  // HF's default: half a cosine, from 1 down to 0
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress)));
    }
    case SchedulerType::constant:
      break;
  }
  return 1.0;
}

LrSchedule::LrSchedule(SchedulerType type, double base_lr, int64_t warmup_steps, int64_t total_steps)
    : type_(type), base_lr_(base_lr), warmup_steps_(warmup_steps), total_steps_(total_steps) {
  if (total_steps <= 0)
    throw Error("learning-rate schedule: total steps must be positive (got " + std::to_string(total_steps) +
                "); check max_steps / num_train_epochs and the dataset size");
  if (warmup_steps < 0) throw Error("learning-rate schedule: warmup steps must be 0 or more (got " +
                                    std::to_string(warmup_steps) + ")");
}

void LrSchedule::set_step(int64_t step) {
  if (step < 0) throw Error("learning-rate schedule: cannot resume at step " + std::to_string(step));
  step_ = step;
}

}  // namespace dsft::train
