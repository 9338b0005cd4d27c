// The summed cross-entropy (see loss.h): a fused CPU node and the tensor-op path it follows.
#include "dsft/model/loss.h"

#include <torch/torch.h>

#include "dsft/util/error.h"
#include "model/bf16_bits.h"
#include "model/cpu_kernels.h"

namespace dsft::model {

namespace F = torch::nn::functional;

namespace {

static_assert(sizeof(kernels::LogSumExp) == 2 * sizeof(float), "LogSumExp is stored as two floats per row");

struct CrossEntropySumFn : public torch::autograd::Function<CrossEntropySumFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits_in,
                               const torch::Tensor& targets) {
    const torch::Tensor x = logits_in.contiguous();
    const int64_t N = x.size(0), V = x.size(1);
    const torch::Tensor t = targets.to(torch::kInt64).contiguous();
    const int64_t* tp = t.data_ptr<int64_t>();
    for (int64_t i = 0; i < N; ++i) {
      if (tp[i] < 0 || tp[i] >= V)
        throw Error("cross-entropy: target " + std::to_string(tp[i]) + " is outside the vocabulary of " +
                    std::to_string(V));
    }
    // Per row: the maximum, the log of the shifted sum, and the row's loss.
    torch::Tensor lse = torch::empty({N, 2}, x.options().dtype(torch::kFloat32));
    torch::Tensor rows = torch::empty({N}, lse.options());
    auto* lp = reinterpret_cast<kernels::LogSumExp*>(lse.data_ptr<float>());
    float* rp = rows.data_ptr<float>();
    const bool bf16 = x.scalar_type() == torch::kBFloat16;
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float picked;
        if (bf16) {
          lp[i] = kernels::logsumexp_bf16(bf16_bits(x) + i * V, V);
          picked = static_cast<float>(x.data_ptr<at::BFloat16>()[i * V + tp[i]]);
        } else {
          lp[i] = kernels::logsumexp_f32(x.data_ptr<float>() + i * V, V);
          picked = x.data_ptr<float>()[i * V + tp[i]];
        }
        rp[i] = (lp[i].max - picked) + lp[i].log_sum;  // −log softmax at the target
      }
    });
    ctx->save_for_backward({x, t, lse});
    // Per-row losses in fp32 (as log_softmax gives them), summed in double.
    return rows.to(torch::kFloat64).sum().to(torch::kFloat32);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &t = saved[1], &lse = saved[2];
    const int64_t N = x.size(0), V = x.size(1);
    const float scale = grad[0].to(torch::kFloat32).item<float>();
    torch::Tensor g = torch::empty_like(x);
    const int64_t* tp = t.data_ptr<int64_t>();
    const auto* lp = reinterpret_cast<const kernels::LogSumExp*>(lse.data_ptr<float>());
    const bool bf16 = x.scalar_type() == torch::kBFloat16;
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (bf16) {
          kernels::xent_grad_bf16(bf16_bits(x) + i * V, lp[i], tp[i], scale, bf16_bits(g) + i * V, V);
        } else {
          kernels::xent_grad_f32(x.data_ptr<float>() + i * V, lp[i], tp[i], scale,
                                 g.data_ptr<float>() + i * V, V);
        }
      }
    });
    return {g, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets) {
  if (logits.dim() != 2 || targets.dim() != 1 || targets.size(0) != logits.size(0))
    throw Error("cross-entropy: expected logits [N, V] and targets [N]");
  const auto dt = logits.scalar_type();
  if (logits.device().is_cpu() && (dt == torch::kFloat32 || dt == torch::kBFloat16) && logits.size(1) > 0)
    return CrossEntropySumFn::apply(logits, targets);
  const torch::Tensor x = dt == torch::kFloat64 ? logits : logits.to(torch::kFloat32);
  return F::cross_entropy(x, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
}

}  // namespace dsft::model
