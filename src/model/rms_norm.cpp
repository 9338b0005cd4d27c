// RMSNorm on the CPU as one pass per row in each direction: y = w · cast(x · r), r = rsqrt(mean(x²)
// + eps) in fp32 (fp64 for double inputs). As eager ops it is eight element-wise passes forward
// and more backward, with fp32 copies of x kept for the backward; here the backward keeps x and r.
// fp32 and bf16 rows go through the vectorised loops of cpu_kernels.cpp; add_rms_norm() also takes
// the residual add before a norm into the same pass each way. Elsewhere (CUDA) the same formula
// runs as ops.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "dsft/model/layers.h"
#include "model/bf16_bits.h"
#include "model/cpu_kernels.h"
#include "model/lane_sum.h"

namespace dsft::model {

namespace {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Rows per task of at::parallel_for: about 16k elements.
int64_t rows_grain(int64_t n) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
}

// fp32 and bf16 rows go through the vectorised loops (forward_rows / backward_rows); the
// templates below take the other dtypes (fp64 statistics for double, fp32 for half).
bool vectorised(const torch::Tensor& x) {
  return x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16;
}

// Rows of x [rows, n] (plus delta, written to sum, when delta is defined) -> y and r, fp32/bf16.
void forward_rows(const torch::Tensor& x, const torch::Tensor& delta, const torch::Tensor& sum,
                  const torch::Tensor& w, const torch::Tensor& y, const torch::Tensor& r, int64_t rows,
                  int64_t n, double eps) {
  const bool add = delta.defined(), bf16 = x.scalar_type() == torch::kBFloat16;
  const auto e = static_cast<float>(eps);
  at::parallel_for(0, rows, rows_grain(n), [&](int64_t begin, int64_t end) {
    if (bf16)
      kernels::rms_norm_rows_bf16(bf16_bits(x), add ? bf16_bits(delta) : nullptr,
                                  add ? bf16_bits(sum) : nullptr, bf16_bits(w), bf16_bits(y),
                                  r.data_ptr<float>(), begin, end, n, e);
    else
      kernels::rms_norm_rows_f32(x.data_ptr<float>(), add ? delta.data_ptr<float>() : nullptr,
                                 add ? sum.data_ptr<float>() : nullptr, w.data_ptr<float>(),
                                 y.data_ptr<float>(), r.data_ptr<float>(), begin, end, n, e);
  });
}

// dx for rows of x (plus dres when it is defined), fp32/bf16.
void backward_rows(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& dy,
                   const torch::Tensor& r, const torch::Tensor& dres, const torch::Tensor& dx, int64_t rows,
                   int64_t n) {
  const bool res = dres.defined(), bf16 = x.scalar_type() == torch::kBFloat16;
  at::parallel_for(0, rows, rows_grain(n), [&](int64_t begin, int64_t end) {
    if (bf16)
      kernels::rms_norm_grad_rows_bf16(bf16_bits(x), bf16_bits(w), bf16_bits(dy), r.data_ptr<float>(),
                                       res ? bf16_bits(dres) : nullptr, bf16_bits(dx), begin, end, n);
    else
      kernels::rms_norm_grad_rows_f32(x.data_ptr<float>(), w.data_ptr<float>(), dy.data_ptr<float>(),
                                      r.data_ptr<float>(), res ? dres.data_ptr<float>() : nullptr,
                                      dx.data_ptr<float>(), begin, end, n);
  });
}

// Rows of x [rows, n] -> y [rows, n] and r [rows] (fp32, or fp64 for double).
template <typename T>
void rms_forward(const T* x, const T* w, T* y, acc_t<T>* r, int64_t rows, int64_t n, double eps) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, rows_grain(n), [&](int64_t begin, int64_t end) {
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
        yi[j] =
            static_cast<T>(static_cast<A>(w[j]) * static_cast<A>(static_cast<T>(static_cast<A>(xi[j]) * ri)));
    }
  });
}

// dx = r · (g − x̂ · mean(g · x̂)) with g = dy · w and x̂ = x · r, all in the accumulation type.
template <typename T>
void rms_backward(const T* x, const T* w, const T* dy, const acc_t<T>* r, T* dx, int64_t rows, int64_t n) {
  using A = acc_t<T>;
  at::parallel_for(0, rows, rows_grain(n), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T *xi = x + i * n, *gi = dy + i * n;
      const A ri = r[i];
      const A dot = lane_sum<A>(n,
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

// dw = Σ_rows dy · cast(x̂), as the ops compute it (only when the norm's weight trains).
torch::Tensor weight_grad(const torch::Tensor& x, const torch::Tensor& r, const torch::Tensor& dy,
                          const torch::Tensor& w) {
  const int64_t n = x.size(-1), rows = r.size(0);
  const auto acc = r.scalar_type();
  const auto xh = (x.reshape({rows, n}).to(acc) * r.unsqueeze(1)).to(x.scalar_type()).to(acc);
  return (dy.reshape({rows, n}).to(acc) * xh).sum(0).to(w.scalar_type());
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
    if (vectorised(x)) {
      forward_rows(x, {}, {}, w, y, r, rows, n, eps);
    } else {
      AT_DISPATCH_FLOATING_TYPES_AND(at::kHalf, x.scalar_type(), "dsft_rms_norm", [&] {
        rms_forward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                              r.data_ptr<acc_t<scalar_t>>(), rows, n, eps);
      });
    }
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
      if (vectorised(x)) {
        backward_rows(x, w, dy, r, {}, dx, rows, n);
      } else {
        AT_DISPATCH_FLOATING_TYPES_AND(at::kHalf, x.scalar_type(), "dsft_rms_norm_backward", [&] {
          rms_backward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                 r.data_ptr<acc_t<scalar_t>>(), dx.data_ptr<scalar_t>(), rows, n);
        });
      }
    }
    if (ctx->needs_input_grad(1)) dw = weight_grad(x, r, dy, w);
    return {dx, dw, torch::Tensor()};
  }
};

// (x + delta, rms_norm(x + delta)) as one node, fp32 or bf16 on the CPU: the residual add is
// written in the pass that normalises, and the backward adds the residual path's gradient to the
// norm's in the pass that computes the latter. Both inputs get that one gradient.
struct AddRmsNormFn : public torch::autograd::Function<AddRmsNormFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                                const torch::Tensor& delta, const torch::Tensor& weight,
                                                double eps) {
    const int64_t n = x.size(-1);
    const torch::Tensor xc = x.contiguous(), dc = delta.contiguous(), w = weight.contiguous();
    const int64_t rows = n > 0 ? xc.numel() / n : 0;
    torch::Tensor sum = torch::empty_like(xc), y = torch::empty_like(xc);
    torch::Tensor r = torch::empty({rows}, xc.options().dtype(torch::kFloat));
    forward_rows(xc, dc, sum, w, y, r, rows, n, eps);
    ctx->save_for_backward({sum, w, r});
    return {sum, y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1], &r = saved[2];
    const int64_t n = x.size(-1), rows = r.size(0);
    const torch::Tensor dres = grad[0].defined() ? grad[0].to(x.scalar_type()).contiguous() : torch::Tensor();
    const torch::Tensor dy =
        grad[1].defined() ? grad[1].to(x.scalar_type()).contiguous() : torch::zeros_like(x);
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0) || ctx->needs_input_grad(1)) {
      dx = torch::empty_like(x);
      backward_rows(x, w, dy, r, dres, dx, rows, n);
    }
    if (ctx->needs_input_grad(2)) dw = weight_grad(x, r, dy, w);
    return {ctx->needs_input_grad(0) ? dx : torch::Tensor(), ctx->needs_input_grad(1) ? dx : torch::Tensor(),
            dw, torch::Tensor()};
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& delta,
                                                     const torch::Tensor& weight, double eps) {
  const auto dt = x.scalar_type();
  if (x.device().is_cpu() && delta.device().is_cpu() && weight.device().is_cpu() &&
      (dt == torch::kFloat || dt == torch::kBFloat16) && delta.scalar_type() == dt &&
      weight.scalar_type() == dt && x.sizes() == delta.sizes() && x.dim() >= 1 && weight.dim() == 1 &&
      weight.size(0) == x.size(-1)) {
    auto out = AddRmsNormFn::apply(x, delta, weight, eps);
    return {out[0], out[1]};
  }
  torch::Tensor h = x + delta;
  return {h, rms_norm(h, weight, eps)};
}

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
