// Gradient (activation) checkpointing for libtorch, which has no torch::utils::checkpoint: the
// forward runs without recording a graph, and the backward recomputes it and backpropagates
// through the recomputation. Trades one extra forward per block for not keeping its activations.
#pragma once
#include <torch/types.h>

#include <functional>
#include <vector>

namespace dsft::train {

using TensorList = std::vector<torch::Tensor>;
using CheckpointFn = std::function<TensorList(const TensorList&)>;

// Returns fn(inputs), saving only `inputs` for the backward pass. `fn` may close over module
// parameters: their gradients accumulate as without checkpointing, even when no input requires
// grad (a frozen embedding feeding LoRA layers). With `preserve_rng_state`, the CPU generator's
// state (and that of the CUDA devices the inputs live on) is saved before the forward and
// restored around the recomputation, so dropout draws the same masks; the global generators are
// left as they would be without recomputation. `fn` must be deterministic given its inputs and
// the RNG state, and must not change module state (e.g. running statistics).
// Under torch::NoGradGuard (evaluation) it simply calls fn.
TensorList checkpoint(CheckpointFn fn, const TensorList& inputs, bool preserve_rng_state = true);

// The one-tensor form, for a decoder layer: hidden = checkpoint(layer_fn, hidden).
torch::Tensor checkpoint(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& input,
                         bool preserve_rng_state = true);

}  // namespace dsft::train
