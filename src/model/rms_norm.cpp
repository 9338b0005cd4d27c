// RMSNorm on the CPU as one pass per row in each direction: y = w · cast(x · r), r = rsqrt(mean(x²)
// + eps) in fp32 (fp64 for double inputs). As eager ops it is eight element-wise passes forward
// and more backward, with fp32 copies of x kept for the backward; here the backward keeps x and r.
// Elsewhere (CUDA) the same formula runs as ops.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "dsft/model/layers.h"

namespace dsft::model {

namespace {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Σ f(j) over j < n with 16 independent partial sums (a single running sum is one long chain of
// dependent additions; the compiler may not reorder floating-point sums by itself).
template <typename A, typename F>
A lane_sum(int64_t n, F f) {
  constexpr int L = 16;
  A part[L] = {};
  int64_t j = 0;
  for (; j + L <= n; j += L)
    for (int k = 0; k < L; ++k) part[k] += f(j + k);
  for (; j < n; ++j) part[0] += f(j);
  A sum = 0;
  for (int k = 0; k < L; ++k) sum += part[k];
  return sum;
}

// Rows of x [rows, n] -> y [rows, n] and r [rows] (fp32, or fp64 for double).
template <typename T>
void rms_forward(const T* x, const T* w, T* y, acc_t<T>* r, int64_t rows, int64_t n, double eps) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t i = begin; i < end; ++i) {
                       const T* xi = x + i * n;
                       const A sum = lane_sum<A>(n, [&](int64_t j) {
                         const A v = static_cast<A>(xi[j]);
                         return v * v;
                       });
                       const A ri = A(1) / std::sqrt(sum / static_cast<A>(n) + static_cast<A>(eps));
                       r[i] = ri;
                       T* yi = y + i * n;
                       // The normalised value is rounded to x's dtype before the weight multiplies it.
                       for (int64_t j = 0; j < n; ++j)
                         yi[j] = static_cast<T>(static_cast<A>(w[j]) *
                                                static_cast<A>(static_cast<T>(static_cast<A>(xi[j]) * ri)));
                     }
                   });
}

// dx = r · (g − x̂ · mean(g · x̂)) with g = dy · w and x̂ = x · r, all in the accumulation type.
template <typename T>
void rms_backward(const T* x, const T* w, const T* dy, const acc_t<T>* r, T* dx, int64_t rows, int64_t n) {
  using A = acc_t<T>;
  at::parallel_for(
      0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const T *xi = x + i * n, *gi = dy + i * n;
          const A ri = r[i];
          const A dot =
              lane_sum<A>(n,
                          [&](int64_t j) {
                            return static_cast<A>(gi[j]) * static_cast<A>(w[j]) * static_cast<A>(xi[j]);
                          }) *
              ri / static_cast<A>(n);
          T* di = dx + i * n;
          for (int64_t j = 0; j < n; ++j) {
            const A xh = static_cast<A>(xi[j]) * ri;
            di[j] = static_cast<T>(ri * (static_cast<A>(gi[j]) * static_cast<A>(w[j]) - xh * dot));
          }
        }
      });
}

struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, double eps) {
    const int64_t n = input.size(-1);
    const torch::Tensor x = input.contiguous(), w = weight.contiguous();
    const int64_t rows = n > 0 ? x.numel() / n : 0;
    torch::Tensor y = torch::empty_like(x);
    torch::Tensor r = torch::empty(
        {rows}, x.options().dtype(x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dsft_rms_norm", [&] {
      rms_forward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                            r.data_ptr<acc_t<scalar_t>>(), rows, n, eps);
    });
    ctx->save_for_backward({x, w, r});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1], &r = saved[2];
    const torch::Tensor dy = grad[0].to(x.scalar_type()).contiguous();
    const int64_t n = x.size(-1), rows = r.size(0);
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      dx = torch::empty_like(x);
      AT_DISPATCH_FLOATING_TYPES_AND2(
          at::kBFloat16, at::kHalf, x.scalar_type(), "dsft_rms_norm_backward", [&] {
            rms_backward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                   r.data_ptr<acc_t<scalar_t>>(), dx.data_ptr<scalar_t>(), rows, n);
          });
    }
    if (ctx->needs_input_grad(1)) {
      // dw = Σ_rows dy · cast(x̂), as the ops compute it (only when the norm's weight trains).
      const auto acc = r.scalar_type();
      const auto xh = (x.reshape({rows, n}).to(acc) * r.unsqueeze(1)).to(x.scalar_type()).to(acc);
      dw = (dy.reshape({rows, n}).to(acc) * xh).sum(0).to(w.scalar_type());
    }
    return {dx, dw, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (x.device().is_cpu() && weight.device().is_cpu() && x.scalar_type() == weight.scalar_type() &&
      x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1) &&
      c10::isFloatingType(x.scalar_type()))
    return RmsNormFn::apply(x, weight, eps);
  auto h = x.to(accumulation_dtype(x.scalar_type()));
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

}  // namespace dsft::model
