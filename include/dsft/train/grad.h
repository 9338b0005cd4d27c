// Gradient norms and clipping, and the dynamic loss scaler for fp16 training.
//
// One optimizer step with both (the scale is 1 when the scaler is disabled, as for bf16/fp32):
//   (loss * scaler.scale()).backward();                       // per micro-batch
//   double norm = global_grad_norm(params, 1.0 / scaler.scale());
//   bool ok = std::isfinite(norm);                            // false: overflow, or a NaN loss
//   if (ok) optimizer.step(clip_coefficient(norm, max_grad_norm) / scaler.scale());
//   scaler.update(!ok);                                       // backs off on overflow
//   optimizer.zero_grad();
// Unscaling and clipping are folded into the optimizer's fp32 read of each gradient, so fp16
// gradients are never divided in fp16 (where small values would underflow).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace dsft::train {

// The L2 norm over the gradients of all `params` (those without a gradient are skipped), times
// `scale`. Each tensor's norm is taken in fp32 and they are combined in double; the result is
// inf or NaN when any gradient is non-finite, which callers report and treat as a skipped step.
double global_grad_norm(const std::vector<torch::Tensor>& params, double scale = 1.0);

// The factor torch.nn.utils.clip_grad_norm_ multiplies gradients by: min(1, max_norm / (norm + 1e-6)).
// 1 when max_norm <= 0 (clipping disabled).
double clip_coefficient(double total_norm, double max_norm);

// torch.nn.utils.clip_grad_norm_: scales the gradients in place so their global norm is at most
// `max_norm` and returns the norm before clipping. Non-finite norms leave the gradients untouched
// (the step is to be skipped) and are returned as they are.
double clip_grad_norm_(const std::vector<torch::Tensor>& params, double max_norm);

struct LossScalerState {
  double scale = 65536.0;
  int64_t growth_tracker = 0;  // clean steps since the last change of scale
};

// Dynamic loss scaling as torch.cuda.amp.GradScaler: start at 2^16, double after
// `growth_interval` steps without overflow, halve (and skip the step) on overflow.
class LossScaler {
 public:
  explicit LossScaler(bool enabled, double init_scale = 65536.0, double growth_factor = 2.0,
                      double backoff_factor = 0.5, int64_t growth_interval = 2000);
  bool enabled() const { return enabled_; }
  double scale() const { return enabled_ ? state_.scale : 1.0; }
  // Records the outcome of one optimizer step; returns whether its update should be applied.
  bool update(bool found_inf);
  const LossScalerState& state() const { return state_; }
  void set_state(const LossScalerState& s);  // throws dsft::Error on a non-positive scale

 private:
  bool enabled_;
  double growth_factor_, backoff_factor_;
  int64_t growth_interval_;
  LossScalerState state_;
};

}  // namespace dsft::train
