// Rotary position embeddings: inverse frequencies for every scaling variant HF configs name
// (default, linear, dynamic NTK, llama3, YaRN), cos/sin tables for given positions, and the two
// rotation layouts (rotate-half for HF llama/qwen2 weights, adjacent pairs for DeepSeek).
#pragma once
#include <torch/torch.h>

#include <vector>

#include "dsft/model/config.h"

namespace dsft::model {

enum class RopeLayout {
  rotate_half,  // pairs (i, i + d/2): HF llama / qwen2 checkpoints
  interleaved,  // pairs (2i, 2i + 1): DeepSeek V2/V3 (no weight permutation)
};

struct RopeOptions {
  RopeOptions(int64_t dim, double theta) : dim_(dim), theta_(theta) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, theta);
  TORCH_ARG(RopeScaling, scaling) = {};
  TORCH_ARG(int64_t, max_position_embeddings) = 0;  // dynamic NTK grows the base past this length
  TORCH_ARG(RopeLayout, layout) = RopeLayout::rotate_half;
  // YaRN's cos/sin scale: DeepSeek's m(f, mscale) / m(f, mscale_all_dim) when true, HF's generic
  // attention_factor otherwise.
  TORCH_ARG(bool, deepseek_yarn) = false;
};

// cos and sin of position x frequency, fp32, [B, 1, T, dim/2] (broadcast over heads).
struct RopeTables {
  torch::Tensor cos;
  torch::Tensor sin;
};

class Rope {
 public:
  explicit Rope(RopeOptions options);

  // position_ids: integer [B, T].
  RopeTables tables(const torch::Tensor& position_ids) const;
  // x: [B, H, T, dim]; rotated in fp32, returned in x's dtype.
  torch::Tensor apply(const torch::Tensor& x, const RopeTables& tables) const;

  // Inverse frequencies (dim/2 values) before any dynamic-NTK growth.
  const std::vector<double>& inv_freq() const { return inv_freq_; }
  // The factor cos/sin are multiplied by (YaRN's attention scaling; 1 otherwise).
  double attention_scaling() const { return attention_scaling_; }
  const RopeOptions& options() const { return options_; }

 private:
  std::vector<double> inv_freq_for(int64_t seq_len) const;
  RopeOptions options_;
  std::vector<double> inv_freq_;
  double attention_scaling_ = 1.0;
};

// YaRN's magnitude correction m(f, x) = 0.1 * x * ln f + 1 (1 for f <= 1).
double yarn_mscale(double factor, double mscale);

// The inverse frequencies of `scaling` for a rotary dimension `dim` and base `theta`
// (dynamic NTK at `seq_len`; ignored by the other types).
std::vector<double> rope_inv_freq(int64_t dim, double theta, const RopeScaling& scaling,
                                  int64_t max_position_embeddings, int64_t seq_len);

}  // namespace dsft::model
