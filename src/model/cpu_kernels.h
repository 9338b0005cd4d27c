// Element-wise CPU loops fused for training on the CPU: RMSNorm (with the residual add before it),
// SwiGLU forward/backward, the RoPE rotation and the cross-entropy of a row of logits, on fp32 or bf16 (raw
// bits) arrays. Each call handles a sub-range, so that callers split the work with at::parallel_for. Built
// once per instruction set (AVX-512, AVX2, baseline) and picked at load time; the arithmetic is fp32 without
// fused multiply-adds, rounding to bf16 where the equivalent tensor ops round.
#pragma once
#include <cstdint>

namespace dsft::model::kernels {

// RMSNorm of rows [begin, end) of [rows, n]: y = w · cast(x · r), r = 1 / sqrt(mean(x²) + eps) in
// fp32 (kept per row for the backward). With `delta`, the row normalised is x + delta (rounded to
// the format, as an addition of tensors rounds), written to `sum` (the residual stream).
void rms_norm_rows_f32(const float* x, const float* delta, float* sum, const float* w, float* y, float* r,
                       int64_t begin, int64_t end, int64_t n, float eps);
void rms_norm_rows_bf16(const uint16_t* x, const uint16_t* delta, uint16_t* sum, const uint16_t* w,
                        uint16_t* y, float* r, int64_t begin, int64_t end, int64_t n, float eps);
// Its input gradient: dx = r · (g − x̂ · mean(g · x̂)) with g = dy · w and x̂ = x · r. With `dres`
// (the gradient reaching the normalised input by the residual path), dx = cast(that) + dres, the
// sum the autograd engine would form.
void rms_norm_grad_rows_f32(const float* x, const float* w, const float* dy, const float* r,
                            const float* dres, float* dx, int64_t begin, int64_t end, int64_t n);
void rms_norm_grad_rows_bf16(const uint16_t* x, const uint16_t* w, const uint16_t* dy, const float* r,
                             const uint16_t* dres, uint16_t* dx, int64_t begin, int64_t end, int64_t n);

// y = silu(g) · u over [begin, end).
void swiglu_forward_f32(const float* g, const float* u, float* y, int64_t begin, int64_t end);
void swiglu_forward_bf16(const uint16_t* g, const uint16_t* u, uint16_t* y, int64_t begin, int64_t end);
// dg = dy · u · silu'(g), du = dy · silu(g) over [begin, end).
void swiglu_backward_f32(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t begin,
                         int64_t end);
void swiglu_backward_bf16(const uint16_t* g, const uint16_t* u, const uint16_t* dy, uint16_t* dg,
                          uint16_t* du, int64_t begin, int64_t end);

// One row of `2·half` values rotated by angles with tables cos/sin [half] (fp32):
// rotate-half layout (pairs j, j + half) or adjacent pairs (2j, 2j + 1).
void rope_row_f32(const float* x, const float* cos, const float* sin, float* out, int64_t half,
                  bool adjacent);
void rope_row_bf16(const uint16_t* x, const float* cos, const float* sin, uint16_t* out, int64_t half,
                   bool adjacent);

// Cross-entropy over one row of n logits: log Σ exp(x) as the row's maximum and the log of the
// shifted sum (kept apart so that x - max, exact for nearby values, is taken before the small
// term; summed in fp32; a NaN logit gives NaN, as in log_softmax).
struct LogSumExp {
  float max;
  float log_sum;
};
LogSumExp logsumexp_f32(const float* x, int64_t n);
LogSumExp logsumexp_bf16(const uint16_t* x, int64_t n);
// Its gradient times `scale`: g = (exp(x - max - log_sum) - [j == target]) · scale, in the logits'
// format.
void xent_grad_f32(const float* x, LogSumExp lse, int64_t target, float scale, float* g, int64_t n);
void xent_grad_bf16(const uint16_t* x, LogSumExp lse, int64_t target, float scale, uint16_t* g, int64_t n);

// One row of n attention scores: p = softmax(x · scale) over the positions not blocked (zero where
// blocked; uniform over the row when every position is). p32 is fp32 (what the backward reads),
// out is in the scores' format (it may be p32 itself for fp32).
void masked_softmax_f32(const float* x, const bool* blocked, float scale, float* p32, float* out, int64_t n);
void masked_softmax_bf16(const uint16_t* x, const bool* blocked, float scale, float* p32, uint16_t* out,
                         int64_t n);
// Its gradient: dx = p · (dp − Σ p·dp) · scale, zero where blocked, in dp's format.
void masked_softmax_grad_f32(const float* p32, const float* dp, const bool* blocked, float scale, float* dx,
                             int64_t n);
void masked_softmax_grad_bf16(const float* p32, const uint16_t* dp, const bool* blocked, float scale,
                              uint16_t* dx, int64_t n);

}  // namespace dsft::model::kernels
