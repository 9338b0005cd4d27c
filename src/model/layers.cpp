// The small blocks: Linear construction, RMSNorm, token embedding, SwiGLU MLP and the
// pre-norm decoder layer.
#include "dsft/model/layers.h"

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
  auto h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + options.eps());
  return weight * h.to(x.scalar_type());
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
  auto lin = [&](int64_t in, int64_t out) {
    return make_linear(in, out, o.bias(), o.tensor_options());
  };
  gate_proj = register_module("gate_proj", lin(o.hidden_size(), o.intermediate_size()));
  up_proj = register_module("up_proj", lin(o.hidden_size(), o.intermediate_size()));
  down_proj = register_module("down_proj", lin(o.intermediate_size(), o.hidden_size()));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return down_proj->forward(F::silu(gate_proj->forward(x)) * up_proj->forward(x));
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
  auto h = x + self_attn->forward(input_layernorm->forward(x), ctx, cache);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

}  // namespace dsft::model
