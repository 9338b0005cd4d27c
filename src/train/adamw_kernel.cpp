// The fused AdamW loop (see adamw_kernel.h). Compiled without contraction, so that each product
// and sum rounds where the tensor op rounds; the two fused multiply-adds are torch's own:
// add_(grad, alpha) is fmadd in its vectorised kernel, and its addcmul_ kernel is compiled into
// fma(value · t1, t2, self) (checked against python3-torch on 10^5 random values: all equal).
#include "train/adamw_kernel.h"

#include <cmath>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSFT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DSFT_KERNEL
#endif

namespace dsft::train::kernels {

DSFT_KERNEL
void adamw_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, const AdamWScalars& s,
               int64_t begin, int64_t end) {
  const AdamWScalars c = s;  // by value: no aliasing with the arrays
  for (int64_t i = begin; i < end; ++i) {
    const float g = c.grad_multiplier == 1.0f ? grad[i] : grad[i] * c.grad_multiplier;
    const float p = param[i] * c.decay;
    const float m = std::fma(g, c.one_minus_beta1, exp_avg[i] * c.beta1);
    const float v = std::fma(c.one_minus_beta2 * g, g, exp_avg_sq[i] * c.beta2);
    const float denom = std::sqrt(v) / c.bias_correction2_sqrt + c.eps;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p + c.neg_step_size * m / denom;
  }
}

}  // namespace dsft::train::kernels
