// The language-model loss over selected positions.
#pragma once
#include <torch/types.h>

namespace dsft::model {

// Σ_i −log softmax(logits_i)[targets_i] for logits [N, V] (any float dtype) and int64 targets [N]:
// a 0-dim fp32 tensor (fp64 for fp64 logits) with a gradient to logits in their dtype. On the CPU
// for fp32/bf16 logits it is one autograd node (log-sum-exp per row in fp32, one pass forward and
// one backward, no fp32 copy of bf16 logits); elsewhere torch's cross_entropy on fp32 logits.
torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace dsft::model
