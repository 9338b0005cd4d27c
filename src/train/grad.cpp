// Global gradient norm (one host sync per call), clipping, and the dynamic loss scaler.
#include "dsft/train/grad.h"

#include <cmath>
#include <string>

#include "dsft/util/error.h"

namespace dsft::train {

double global_grad_norm(const std::vector<torch::Tensor>& params, double scale) {
  std::vector<torch::Tensor> norms;
  torch::Device device = torch::kCPU;
  for (const auto& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (norms.empty()) device = g.device();
    // fp32 per-tensor norms: bf16/fp16 norms of large tensors lose digits or overflow.
    norms.push_back(g.detach().to(torch::kFloat32).norm().to(device));
  }
  if (norms.empty()) return 0.0;
  // Sum of squares in double, on the device, so the host waits once.
  const double total = torch::stack(norms).to(torch::kFloat64).pow(2).sum().sqrt().item<double>();
  return total * scale;
}

double clip_coefficient(double total_norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  const double coef = max_norm / (total_norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

double clip_grad_norm_(const std::vector<torch::Tensor>& params, double max_norm) {
  const double norm = global_grad_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double coef = clip_coefficient(norm, max_norm);
  if (coef < 1.0) {
    torch::NoGradGuard no_grad;
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().detach().mul_(coef);
  }
  return norm;
}

LossScaler::LossScaler(bool enabled, double init_scale, double growth_factor, double backoff_factor,
                       int64_t growth_interval)
    : enabled_(enabled), growth_factor_(growth_factor), backoff_factor_(backoff_factor),
      growth_interval_(growth_interval) {
  if (!(init_scale > 0) || !(growth_factor > 1) || !(backoff_factor > 0 && backoff_factor < 1) || growth_interval <= 0)
    throw Error("loss scaler: need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1, growth_interval > 0");
  state_.scale = init_scale;
}

bool LossScaler::update(bool found_inf) {
  if (!enabled_) return !found_inf;
  if (found_inf) {
    state_.scale *= backoff_factor_;
    state_.growth_tracker = 0;
    return false;
  }
  if (++state_.growth_tracker == growth_interval_) {
    const double grown = state_.scale * growth_factor_;
    if (std::isfinite(grown)) state_.scale = grown;  // GradScaler also never grows into inf
    state_.growth_tracker = 0;
  }
  return true;
}

void LossScaler::set_state(const LossScalerState& s) {
  if (!(s.scale > 0) || !std::isfinite(s.scale) || s.growth_tracker < 0)
    throw Error("loss scaler: cannot restore scale " + std::to_string(s.scale) + " with growth tracker " +
                std::to_string(s.growth_tracker));
  state_ = s;
}

}  // namespace dsft::train
