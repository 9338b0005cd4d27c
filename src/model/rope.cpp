// RoPE: inverse frequencies per scaling type (formulas as in HF's modeling_rope_utils and
// DeepSeek's reference), cos/sin tables and the rotate-half / adjacent-pair rotations.
#include "dsft/model/rope.h"

#include <algorithm>
#include <cmath>

#include "dsft/util/error.h"

namespace dsft::model {

double yarn_mscale(double factor, double mscale) {
  if (factor <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(factor) + 1.0;
}

std::vector<double> rope_inv_freq(int64_t dim, double theta, const RopeScaling& s,
                                  int64_t max_position_embeddings, int64_t seq_len) {
  const int64_t half = dim / 2;
  double base = theta;
  if (s.type == RopeType::dynamic && max_position_embeddings > 0 && seq_len > max_position_embeddings) {
    // NTK-aware base growth, recomputed for the current length (HF's dynamic scaling).
    const double len = static_cast<double>(seq_len);
    base = theta * std::pow(s.factor * len / max_position_embeddings - (s.factor - 1.0),
                            static_cast<double>(dim) / (dim - 2));
  }
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / dim);

  switch (s.type) {
    case RopeType::none:
    case RopeType::dynamic:
      break;
    case RopeType::linear:
      for (double& f : inv) f /= s.factor;
      break;
    case RopeType::llama3: {
      const double original = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = original / s.low_freq_factor;
      const double high_wavelen = original / s.high_freq_factor;
      for (double& f : inv) {
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen > low_wavelen) {
          f = f / s.factor;  // low frequencies: fully interpolated
        } else if (wavelen >= high_wavelen) {
          const double smooth =
              (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          f = (1.0 - smooth) * f / s.factor + smooth * f;
        }  // high frequencies unchanged
      }
      break;
    }
    case RopeType::yarn: {
      // Dimensions rotating fewer than beta_slow times over the original context get fully
      // interpolated, those rotating more than beta_fast times are kept, a linear ramp between.
      const double original = static_cast<double>(s.original_max_position_embeddings);
      auto correction_dim = [&](double rotations) {
        return dim * std::log(original / (rotations * 2.0 * M_PI)) / (2.0 * std::log(theta));
      };
      double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
      double high = std::min(std::ceil(correction_dim(s.beta_slow)), static_cast<double>(dim - 1));
      if (low == high) high += 0.001;  // avoid a zero-width ramp
      for (int64_t i = 0; i < half; ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        inv[i] = inv[i] / s.factor * ramp + inv[i] * (1.0 - ramp);
      }
      break;
    }
  }
  return inv;
}

Rope::Rope(RopeOptions options) : options_(std::move(options)) {
  if (options_.dim() <= 0 || options_.dim() % 2 != 0)
    throw Error("rotary dimension must be positive and even (got " + std::to_string(options_.dim()) + ")");
  inv_freq_ = rope_inv_freq(options_.dim(), options_.theta(), options_.scaling(),
                            options_.max_position_embeddings(), 0);
  const RopeScaling& s = options_.scaling();
  if (s.type == RopeType::yarn) {
    if (options_.deepseek_yarn()) {
      // 1.0 whenever mscale == mscale_all_dim, as in every published DeepSeek config.
      attention_scaling_ = yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim);
    } else if (s.attention_factor) {
      attention_scaling_ = *s.attention_factor;
    } else if (s.mscale != 0 && s.mscale_all_dim != 0) {
      attention_scaling_ = yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim);
    } else {
      attention_scaling_ = yarn_mscale(s.factor, 1.0);
    }
  }
}

RopeTables Rope::tables(const torch::Tensor& position_ids) const {
  TORCH_CHECK(position_ids.dim() == 2, "position_ids must be [B, T]");
  const std::vector<double>* inv = &inv_freq_;
  std::vector<double> grown;
  if (options_.scaling().type == RopeType::dynamic && position_ids.numel() > 0) {
    const int64_t seq_len = position_ids.max().item<int64_t>() + 1;
    if (seq_len > options_.max_position_embeddings()) {
      grown = rope_inv_freq(options_.dim(), options_.theta(), options_.scaling(),
                            options_.max_position_embeddings(), seq_len);
      inv = &grown;
    }
  }
  std::vector<float> inv_f(inv->begin(), inv->end());
  auto inv_t = torch::tensor(inv_f, torch::kFloat32).to(position_ids.device());
  // [B, T, 1] * [dim/2] -> [B, T, dim/2]
  auto angles = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_t;
  RopeTables t;
  t.cos = angles.cos().unsqueeze(1);  // [B, 1, T, dim/2]
  t.sin = angles.sin().unsqueeze(1);
  if (attention_scaling_ != 1.0) {
    t.cos = t.cos * attention_scaling_;
    t.sin = t.sin * attention_scaling_;
  }
  return t;
}

torch::Tensor Rope::apply(const torch::Tensor& x, const RopeTables& t) const {
  const int64_t half = options_.dim() / 2;
  auto xf = x.to(torch::kFloat32);
  torch::Tensor out;
  if (options_.layout() == RopeLayout::rotate_half) {
    auto x1 = xf.narrow(-1, 0, half);  // [B, H, T, dim/2]
    auto x2 = xf.narrow(-1, half, half);
    out = torch::cat({x1 * t.cos - x2 * t.sin, x2 * t.cos + x1 * t.sin}, -1);
  } else {
    auto sizes = xf.sizes().vec();
    sizes.back() = half;
    sizes.push_back(2);
    auto pairs = xf.reshape(sizes);  // [B, H, T, dim/2, 2]
    auto x0 = pairs.select(-1, 0);
    auto x1 = pairs.select(-1, 1);
    out = torch::stack({x0 * t.cos - x1 * t.sin, x0 * t.sin + x1 * t.cos}, -1).flatten(-2);
  }
  return out.to(x.scalar_type());
}

}  // namespace dsft::model
