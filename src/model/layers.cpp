// The small blocks: Linear construction, RMSNorm, token embedding, SwiGLU MLP and the
// pre-norm decoder layer.
#include "dsft/model/layers.h"

#include <ATen/Parallel.h>

#include "model/bf16_bits.h"
#include "model/cpu_kernels.h"

namespace dsft::model {

namespace F = torch::nn::functional;

Linear make_linear(int64_t in, int64_t out, bool bias, const BuildOptions& tensor_options) {
  return Linear(LinearOptions(in, out).bias(bias).tensor_options(tensor_options).initialize(false));
}

RMSNormImpl::RMSNormImpl(RMSNormOptions options_) : options(std::move(options_)) {
  reset();
}

void RMSNormImpl::reset() {
  weight = register_parameter("weight", torch::empty({options.dim()}, options.tensor_options()));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return rms_norm(x, weight, options.eps());
}

EmbeddingImpl::EmbeddingImpl(EmbeddingOptions options_) : options(std::move(options_)) {
  reset();
}

void EmbeddingImpl::reset() {
  weight = register_parameter(
      "weight", torch::empty({options.num_embeddings(), options.dim()}, options.tensor_options()));
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return F::embedding(ids, weight);
}

MlpImpl::MlpImpl(MlpOptions options_) : options(std::move(options_)) {
  reset();
}

void MlpImpl::reset() {
  const auto& o = options;
  auto lin = [&](int64_t in, int64_t out) { return make_linear(in, out, o.bias(), o.tensor_options()); };
  gate_proj = register_module("gate_proj", lin(o.hidden_size(), o.intermediate_size()));
  up_proj = register_module("up_proj", lin(o.hidden_size(), o.intermediate_size()));
  down_proj = register_module("down_proj", lin(o.intermediate_size(), o.hidden_size()));
}

namespace {

bool fused_swiglu_ok(const torch::Tensor& g, const torch::Tensor& u) {
  const auto dt = g.scalar_type();
  return g.device().is_cpu() && u.device().is_cpu() && u.scalar_type() == dt &&
         (dt == torch::kFloat32 || dt == torch::kBFloat16) && g.sizes() == u.sizes();
}

// silu(g) · u as one autograd node on the CPU (kernels::swiglu_*): one pass each way, g and u
// kept for the backward instead of g, u and silu(g).
struct SwigluFn : public torch::autograd::Function<SwigluFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate,
                               const torch::Tensor& up) {
    const torch::Tensor g = gate.contiguous(), u = up.contiguous();
    torch::Tensor y = torch::empty_like(g);
    const int64_t n = g.numel();
    at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
      if (g.scalar_type() == torch::kFloat32) {
        kernels::swiglu_forward_f32(g.data_ptr<float>(), u.data_ptr<float>(), y.data_ptr<float>(), begin,
                                    end);
      } else {
        kernels::swiglu_forward_bf16(bf16_bits(g), bf16_bits(u), bf16_bits(y), begin, end);
      }
    });
    ctx->save_for_backward({g, u});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &g = saved[0], &u = saved[1];
    const torch::Tensor dy = grad[0].to(g.scalar_type()).contiguous();
    torch::Tensor dg = torch::empty_like(g), du = torch::empty_like(u);
    at::parallel_for(0, g.numel(), 16384, [&](int64_t begin, int64_t end) {
      if (g.scalar_type() == torch::kFloat32) {
        kernels::swiglu_backward_f32(g.data_ptr<float>(), u.data_ptr<float>(), dy.data_ptr<float>(),
                                     dg.data_ptr<float>(), du.data_ptr<float>(), begin, end);
      } else {
        kernels::swiglu_backward_bf16(bf16_bits(g), bf16_bits(u), bf16_bits(dy), bf16_bits(dg), bf16_bits(du),
                                      begin, end);
      }
    });
    return {dg, du};
  }
};

}  // namespace

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up) {
  if (fused_swiglu_ok(gate, up)) return SwigluFn::apply(gate, up);
  return F::silu(gate) * up;
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
}

DecoderLayerImpl::DecoderLayerImpl(int64_t hidden_size, double eps, std::shared_ptr<AttentionBlock> attn,
                                   std::shared_ptr<FeedForwardBlock> ffn,
                                   const BuildOptions& tensor_options) {
  input_layernorm = register_module(
      "input_layernorm", RMSNorm(RMSNormOptions(hidden_size).eps(eps).tensor_options(tensor_options)));
  self_attn = register_module("self_attn", std::move(attn));
  post_attention_layernorm =
      register_module("post_attention_layernorm",
                      RMSNorm(RMSNormOptions(hidden_size).eps(eps).tensor_options(tensor_options)));
  mlp = register_module("mlp", std::move(ffn));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                        LayerCache* cache) {
  auto [h, normed] = add_rms_norm(x, self_attn->forward(input_layernorm->forward(x), ctx, cache),
                                  post_attention_layernorm->weight, post_attention_layernorm->options.eps());
  return h + mlp->forward(normed);
}

}  // namespace dsft::model
