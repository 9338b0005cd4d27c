// RoPE: inverse frequencies per scaling type (formulas as in HF's modeling_rope_utils and
// DeepSeek's reference), cos/sin tables and the rotate-half / adjacent-pair rotations.
#include "dsft/model/rope.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "dsft/model/layers.h"
#include "dsft/util/error.h"
#include "model/bf16_bits.h"
#include "model/cpu_kernels.h"

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

namespace {

// The CPU loop over rows of x [B, H, T, 2·half] (last dimension contiguous) with tables
// [B, 1, T, half] (fp32, contiguous); nullopt where it does not apply.
std::optional<torch::Tensor> rotate_cpu(const torch::Tensor& x, const torch::Tensor& cos,
                                        const torch::Tensor& sin, RopeLayout layout, int64_t half) {
  const auto dt = x.scalar_type();
  if (!x.device().is_cpu() || (dt != torch::kFloat32 && dt != torch::kBFloat16) || x.dim() != 4 ||
      x.size(3) != 2 * half || x.stride(3) != 1 || cos.scalar_type() != torch::kFloat32 || cos.dim() != 4 ||
      !cos.is_contiguous() || !sin.is_contiguous() || cos.sizes() != sin.sizes() ||
      cos.size(0) != x.size(0) || cos.size(1) != 1 || cos.size(2) != x.size(2) || cos.size(3) != half)
    return std::nullopt;
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2);
  torch::Tensor out = torch::empty({B, H, T, 2 * half}, x.options());
  const bool adjacent = layout == RopeLayout::interleaved;
  const float *c = cos.data_ptr<float>(), *s = sin.data_ptr<float>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2);
  const bool f32 = dt == torch::kFloat32;
  const float* xf = f32 ? x.data_ptr<float>() : nullptr;
  float* of = f32 ? out.data_ptr<float>() : nullptr;
  const uint16_t* xb = f32 ? nullptr : bf16_bits(x);
  uint16_t* ob = f32 ? nullptr : bf16_bits(out);
  at::parallel_for(0, B * H * T, std::max<int64_t>(1, 8192 / half), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (H * T), h = i / T % H, t = i % T;
      const int64_t src = b * s0 + h * s1 + t * s2, tab = (b * T + t) * half, dst = i * 2 * half;
      if (f32) {
        kernels::rope_row_f32(xf + src, c + tab, s + tab, of + dst, half, adjacent);
      } else {
        kernels::rope_row_bf16(xb + src, c + tab, s + tab, ob + dst, half, adjacent);
      }
    }
  });
  return out;
}

// x rotated by the tables' angles in fp32, cast back to x's dtype.
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                     RopeLayout layout, int64_t half) {
  if (auto out = rotate_cpu(x, cos, sin, layout, half)) return *out;
  auto xf = x.to(accumulation_dtype(x.scalar_type()));
  torch::Tensor out;
  if (layout == RopeLayout::rotate_half) {
    auto x1 = xf.narrow(-1, 0, half);  // [B, H, T, dim/2]
    auto x2 = xf.narrow(-1, half, half);
    out = torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
  } else {
    auto sizes = xf.sizes().vec();
    sizes.back() = half;
    sizes.push_back(2);
    auto pairs = xf.reshape(sizes);  // [B, H, T, dim/2, 2]
    auto x0 = pairs.select(-1, 0);
    auto x1 = pairs.select(-1, 1);
    out = torch::stack({x0 * cos - x1 * sin, x0 * sin + x1 * cos}, -1).flatten(-2);
  }
  return out.to(x.scalar_type());
}

// The rotation as one autograd node: its transpose is the rotation by the opposite angles, so
// the backward needs the tables only (no saved activations, no per-op graph).
struct RopeRotation : public torch::autograd::Function<RopeRotation> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& cos, const torch::Tensor& sin, int64_t layout,
                               int64_t half) {
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["layout"] = layout;
    ctx->saved_data["half"] = half;
    return rotate(x, cos, sin, static_cast<RopeLayout>(layout), half);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const auto layout = static_cast<RopeLayout>(ctx->saved_data["layout"].toInt());
    auto dx = rotate(grad[0], saved[0], -saved[1], layout, ctx->saved_data["half"].toInt());
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor Rope::apply(const torch::Tensor& x, const RopeTables& t) const {
  const int64_t half = options_.dim() / 2;
  if (!x.requires_grad()) return rotate(x, t.cos, t.sin, options_.layout(), half);
  return RopeRotation::apply(x, t.cos, t.sin, static_cast<int64_t>(options_.layout()), half);
}

}  // namespace dsft::model
