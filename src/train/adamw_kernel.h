// One pass of AdamW over an fp32 parameter on the CPU: the arithmetic of torch 1.13's
// single-tensor AdamW (the tensor ops in optimizer.cpp) per element, without their dozen passes
// over memory and dispatches per parameter.
#pragma once
#include <cstdint>

namespace dsft::train::kernels {

struct AdamWScalars {
  float grad_multiplier;  // 1 unless the gradients carry a loss scale
  float decay;            // 1 - lr · weight_decay
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float bias_correction2_sqrt, eps;
  float neg_step_size;  // -lr / (1 - beta1^step)
};

// Over [begin, end): p ← p·decay; m ← m·β1 + (1-β1)·g; v ← v·β2 + (1-β2)·g·g;
// p ← p + (-step_size)·m / (√v / √bc2 + eps), with g = grad · grad_multiplier.
void adamw_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, const AdamWScalars& s,
               int64_t begin, int64_t end);

}  // namespace dsft::train::kernels
