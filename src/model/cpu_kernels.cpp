// The fused element-wise CPU loops (see cpu_kernels.h). Written so that the compiler vectorises
// them: branch-free bodies, bf16 handled as bits, exp as a range reduction and a polynomial
// (Cephes' expf, within 1e-7 relative). Compiled without floating-point contraction, so that
// products and sums round as the separate tensor ops round.
#include "model/cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "model/lane_sum.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSFT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DSFT_KERNEL
#endif

namespace dsft::model::kernels {

namespace {

inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bf16_load(uint16_t h) {
  return from_bits(static_cast<uint32_t>(h) << 16);
}

// Round to nearest even, NaN kept quiet (c10::BFloat16's rounding).
inline uint16_t bf16_store(float f) {
  const uint32_t u = to_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

inline float bf16_round(float f) {
  return bf16_load(bf16_store(f));
}

inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float shifted = x * 1.44269504088896341f + 12582912.0f;  // round(x / ln 2) in the low bits
  const float n = shifted - 12582912.0f;
  const int32_t ni = static_cast<int32_t>(to_bits(shifted)) - 0x4B400000;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * from_bits(static_cast<uint32_t>(ni + 127) << 23);
}

inline float sigmoid(float x) {
  return 1.0f / (1.0f + exp_approx(-x));
}

template <class Load>
inline LogSumExp logsumexp_impl(Load load, int64_t n) {
  constexpr int kLanes = 16;  // independent accumulators, so that the sums vectorise
  float lane[kLanes];
  for (float& l : lane) l = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] = std::max(lane[l], load(i + l));
  float mx = -std::numeric_limits<float>::infinity();
  for (float l : lane) mx = std::max(mx, l);
  for (; i < n; ++i) mx = std::max(mx, load(i));
  if (mx == -std::numeric_limits<float>::infinity()) return {mx, 0.0f};  // every logit -inf
  for (float& l : lane) l = 0.0f;
  float tail = 0.0f;
  i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += exp_approx(load(i + l) - mx);
  for (; i < n; ++i) tail += exp_approx(load(i) - mx);
  float sum = tail;
  for (float l : lane) sum += l;
  // A NaN logit is passed over by max() but not by the sum: it reaches the result.
  return {mx, std::log(sum)};
}

template <class Load, class Store>
inline void masked_softmax_impl(Load load, const bool* blocked, float scale, float* p32, Store store,
                                int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  int64_t open = 0;
  for (int64_t j = 0; j < n; ++j) {
    const bool b = blocked && blocked[j];
    const float x = load(j) * scale;
    p32[j] = x;
    if (!b) mx = std::max(mx, x), ++open;
  }
  if (open == 0) {  // every position blocked: the uniform distribution (as a masked_fill + softmax)
    for (int64_t j = 0; j < n; ++j) p32[j] = 1.0f / static_cast<float>(n), store(j, p32[j]);
    return;
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const float e = (blocked && blocked[j]) ? 0.0f : exp_approx(p32[j] - mx);
    p32[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) {
    p32[j] *= inv;
    store(j, p32[j]);
  }
}

template <class Load, class Store>
inline void masked_softmax_grad_impl(const float* p, Load dp, const bool* blocked, float scale, Store store,
                                     int64_t n) {
  float dot = 0.0f;
  for (int64_t j = 0; j < n; ++j) dot += p[j] * dp(j);
  for (int64_t j = 0; j < n; ++j) store(j, (blocked && blocked[j]) ? 0.0f : p[j] * (dp(j) - dot) * scale);
}

// Load(p, j) -> float, Round(float) -> float rounded to the format, Store(p, j, float).
template <class T, class Load, class Round, class Store>
inline void rms_norm_rows_impl(const T* x, const T* delta, T* sum, const T* w, T* y, float* r, int64_t begin,
                               int64_t end, int64_t n, float eps, Load load, Round round, Store store) {
  for (int64_t i = begin; i < end; ++i) {
    const T* xi = x + i * n;
    if (delta) {
      const T* di = delta + i * n;
      T* si = sum + i * n;
      for (int64_t j = 0; j < n; ++j) store(si, j, load(xi, j) + load(di, j));
      xi = si;
    }
    const float ss = lane_sum<float>(n, [&](int64_t j) {
      const float v = load(xi, j);
      return v * v;
    });
    const float ri = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    r[i] = ri;
    T* yi = y + i * n;
    // The normalised value is rounded to x's format before the weight multiplies it.
    for (int64_t j = 0; j < n; ++j) store(yi, j, load(w, j) * round(load(xi, j) * ri));
  }
}

template <class T, class Load, class Store>
inline void rms_norm_grad_rows_impl(const T* x, const T* w, const T* dy, const float* r, const T* dres, T* dx,
                                    int64_t begin, int64_t end, int64_t n, Load load, Store store) {
  for (int64_t i = begin; i < end; ++i) {
    const T *xi = x + i * n, *gi = dy + i * n;
    const float ri = r[i];
    const float dot = lane_sum<float>(n, [&](int64_t j) { return load(gi, j) * load(w, j) * load(xi, j); }) *
                      ri / static_cast<float>(n);
    T* di = dx + i * n;
    for (int64_t j = 0; j < n; ++j) {
      const float xh = load(xi, j) * ri;
      store(di, j, ri * (load(gi, j) * load(w, j) - xh * dot));
    }
    if (dres) {
      const T* ri_res = dres + i * n;
      for (int64_t j = 0; j < n; ++j) store(di, j, load(di, j) + load(ri_res, j));
    }
  }
}

const auto kLoadF32 = [](const float* p, int64_t j) { return p[j]; };
const auto kStoreF32 = [](float* p, int64_t j, float v) { p[j] = v; };
const auto kLoadBf16 = [](const uint16_t* p, int64_t j) { return bf16_load(p[j]); };
const auto kStoreBf16 = [](uint16_t* p, int64_t j, float v) { p[j] = bf16_store(v); };

}  // namespace

DSFT_KERNEL void masked_softmax_f32(const float* x, const bool* blocked, float scale, float* p32, float* out,
                                    int64_t n) {
  masked_softmax_impl([x](int64_t j) { return x[j]; }, blocked, scale, p32,
                      [out](int64_t j, float v) { out[j] = v; }, n);
}

DSFT_KERNEL void masked_softmax_bf16(const uint16_t* x, const bool* blocked, float scale, float* p32,
                                     uint16_t* out, int64_t n) {
  masked_softmax_impl([x](int64_t j) { return bf16_load(x[j]); }, blocked, scale, p32,
                      [out](int64_t j, float v) { out[j] = bf16_store(v); }, n);
}

DSFT_KERNEL void masked_softmax_grad_f32(const float* p32, const float* dp, const bool* blocked, float scale,
                                         float* dx, int64_t n) {
  masked_softmax_grad_impl(
      p32, [dp](int64_t j) { return dp[j]; }, blocked, scale, [dx](int64_t j, float v) { dx[j] = v; }, n);
}

DSFT_KERNEL void masked_softmax_grad_bf16(const float* p32, const uint16_t* dp, const bool* blocked,
                                          float scale, uint16_t* dx, int64_t n) {
  masked_softmax_grad_impl(
      p32, [dp](int64_t j) { return bf16_load(dp[j]); }, blocked, scale,
      [dx](int64_t j, float v) { dx[j] = bf16_store(v); }, n);
}

DSFT_KERNEL LogSumExp logsumexp_f32(const float* x, int64_t n) {
  return logsumexp_impl([x](int64_t i) { return x[i]; }, n);
}

DSFT_KERNEL LogSumExp logsumexp_bf16(const uint16_t* x, int64_t n) {
  return logsumexp_impl([x](int64_t i) { return bf16_load(x[i]); }, n);
}

DSFT_KERNEL void xent_grad_f32(const float* x, LogSumExp lse, int64_t target, float scale, float* g,
                               int64_t n) {
  for (int64_t j = 0; j < n; ++j) g[j] = exp_approx((x[j] - lse.max) - lse.log_sum) * scale;
  g[target] = (exp_approx((x[target] - lse.max) - lse.log_sum) - 1.0f) * scale;
}

DSFT_KERNEL void xent_grad_bf16(const uint16_t* x, LogSumExp lse, int64_t target, float scale, uint16_t* g,
                                int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    g[j] = bf16_store(exp_approx((bf16_load(x[j]) - lse.max) - lse.log_sum) * scale);
  g[target] = bf16_store((exp_approx((bf16_load(x[target]) - lse.max) - lse.log_sum) - 1.0f) * scale);
}

DSFT_KERNEL void rms_norm_rows_f32(const float* x, const float* delta, float* sum, const float* w, float* y,
                                   float* r, int64_t begin, int64_t end, int64_t n, float eps) {
  rms_norm_rows_impl(
      x, delta, sum, w, y, r, begin, end, n, eps, kLoadF32, [](float v) { return v; }, kStoreF32);
}

DSFT_KERNEL void rms_norm_rows_bf16(const uint16_t* x, const uint16_t* delta, uint16_t* sum,
                                    const uint16_t* w, uint16_t* y, float* r, int64_t begin, int64_t end,
                                    int64_t n, float eps) {
  rms_norm_rows_impl(x, delta, sum, w, y, r, begin, end, n, eps, kLoadBf16, bf16_round, kStoreBf16);
}

DSFT_KERNEL void rms_norm_grad_rows_f32(const float* x, const float* w, const float* dy, const float* r,
                                        const float* dres, float* dx, int64_t begin, int64_t end, int64_t n) {
  rms_norm_grad_rows_impl(x, w, dy, r, dres, dx, begin, end, n, kLoadF32, kStoreF32);
}

DSFT_KERNEL void rms_norm_grad_rows_bf16(const uint16_t* x, const uint16_t* w, const uint16_t* dy,
                                         const float* r, const uint16_t* dres, uint16_t* dx, int64_t begin,
                                         int64_t end, int64_t n) {
  rms_norm_grad_rows_impl(x, w, dy, r, dres, dx, begin, end, n, kLoadBf16, kStoreBf16);
}

DSFT_KERNEL void swiglu_forward_f32(const float* g, const float* u, float* y, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) y[i] = g[i] * sigmoid(g[i]) * u[i];
}

DSFT_KERNEL void swiglu_forward_bf16(const uint16_t* g, const uint16_t* u, uint16_t* y, int64_t begin,
                                     int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float gi = bf16_load(g[i]);
    y[i] = bf16_store(bf16_round(gi * sigmoid(gi)) * bf16_load(u[i]));
  }
}

DSFT_KERNEL void swiglu_backward_f32(const float* g, const float* u, const float* dy, float* dg, float* du,
                                     int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float s = sigmoid(g[i]);
    du[i] = dy[i] * (g[i] * s);
    dg[i] = dy[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
  }
}

DSFT_KERNEL void swiglu_backward_bf16(const uint16_t* g, const uint16_t* u, const uint16_t* dy, uint16_t* dg,
                                      uint16_t* du, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float gi = bf16_load(g[i]), dyi = bf16_load(dy[i]);
    const float s = sigmoid(gi);
    du[i] = bf16_store(dyi * bf16_round(gi * s));
    dg[i] = bf16_store(bf16_round(dyi * bf16_load(u[i])) * (s * (1.0f + gi * (1.0f - s))));
  }
}

DSFT_KERNEL void rope_row_f32(const float* x, const float* cos, const float* sin, float* out, int64_t half,
                              bool adjacent) {
  if (adjacent) {
    for (int64_t j = 0; j < half; ++j) {
      const float x0 = x[2 * j], x1 = x[2 * j + 1];
      out[2 * j] = x0 * cos[j] - x1 * sin[j];
      out[2 * j + 1] = x0 * sin[j] + x1 * cos[j];
    }
    return;
  }
  for (int64_t j = 0; j < half; ++j) {
    const float x1 = x[j], x2 = x[j + half];
    out[j] = x1 * cos[j] - x2 * sin[j];
    out[j + half] = x2 * cos[j] + x1 * sin[j];
  }
}

DSFT_KERNEL void rope_row_bf16(const uint16_t* x, const float* cos, const float* sin, uint16_t* out,
                               int64_t half, bool adjacent) {
  if (adjacent) {
    for (int64_t j = 0; j < half; ++j) {
      const float x0 = bf16_load(x[2 * j]), x1 = bf16_load(x[2 * j + 1]);
      out[2 * j] = bf16_store(x0 * cos[j] - x1 * sin[j]);
      out[2 * j + 1] = bf16_store(x0 * sin[j] + x1 * cos[j]);
    }
    return;
  }
  for (int64_t j = 0; j < half; ++j) {
    const float x1 = bf16_load(x[j]), x2 = bf16_load(x[j + half]);
    out[j] = bf16_store(x1 * cos[j] - x2 * sin[j]);
    out[j + half] = bf16_store(x2 * cos[j] + x1 * sin[j]);
  }
}

}  // namespace dsft::model::kernels
