// Σ f(j) over j < n with 16 independent partial sums: a single running sum is one long chain of
// dependent additions, which the compiler may not reorder for floating point; 16 lanes vectorise.
// Shared by the fused CPU loops (cpu_kernels.cpp) and the RMSNorm loops of other dtypes.
#pragma once
#include <cstdint>

namespace dsft::model {

template <typename A, typename F>
inline A lane_sum(int64_t n, F f) {
  constexpr int kLanes = 16;
  A part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) part[k] += f(j + k);
  for (; j < n; ++j) part[0] += f(j);
  A sum = 0;
  for (int k = 0; k < kLanes; ++k) sum += part[k];
  return sum;
}

}  // namespace dsft::model
