// A small module tree with HF llama names (model.layers.N.self_attn.q_proj, ..., lm_head) built
// from dsft::peft::Linear, for the injection and adapter I/O tests.
#pragma once
#include <torch/torch.h>

#include "dsft/peft/lora_linear.h"

namespace dsft::peft::testing {

struct TinyAttentionImpl : torch::nn::Module {
  TinyAttentionImpl(int64_t d, bool bias) {
    q_proj = register_module("q_proj", Linear(LinearOptions(d, d).bias(bias)));
    k_proj = register_module("k_proj", Linear(LinearOptions(d, d / 2).bias(bias)));
    v_proj = register_module("v_proj", Linear(LinearOptions(d, d / 2).bias(bias)));
    o_proj = register_module("o_proj", Linear(LinearOptions(d, d).bias(false)));
  }
  // Not attention: a fixed mixing of the projections, enough to route every layer into the output.
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor kv = torch::cat({k_proj(x), v_proj(x)}, -1);
    return o_proj(torch::tanh(q_proj(x)) * kv);
  }
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(TinyAttention);

struct TinyMlpImpl : torch::nn::Module {
  TinyMlpImpl(int64_t d, int64_t ffn) {
    gate_proj = register_module("gate_proj", Linear(LinearOptions(d, ffn).bias(false)));
    up_proj = register_module("up_proj", Linear(LinearOptions(d, ffn).bias(true)));
    down_proj = register_module("down_proj", Linear(LinearOptions(ffn, d).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return down_proj(torch::silu(gate_proj(x)) * up_proj(x)); }
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(TinyMlp);

struct TinyLayerImpl : torch::nn::Module {
  TinyLayerImpl(int64_t d, int64_t ffn, bool bias) {
    self_attn = register_module("self_attn", TinyAttention(d, bias));
    mlp = register_module("mlp", TinyMlp(d, ffn));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = x + self_attn(x);
    return h + mlp(h);
  }
  TinyAttention self_attn{nullptr};
  TinyMlp mlp{nullptr};
};
TORCH_MODULE(TinyLayer);

struct TinyBodyImpl : torch::nn::Module {
  TinyBodyImpl(int64_t vocab, int64_t d, int64_t ffn, int64_t n_layer, bool bias) {
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(vocab, d));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < n_layer; ++i) layers->push_back(TinyLayer(d, ffn, bias));
  }
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(TinyBody);

struct TinyLmImpl : torch::nn::Module {
  explicit TinyLmImpl(int64_t d = 16, int64_t n_layer = 2, bool bias = true, int64_t vocab = 11,
                      int64_t ffn = 24) {
    model = register_module("model", TinyBody(vocab, d, ffn, n_layer, bias));
    lm_head = register_module("lm_head", Linear(LinearOptions(d, vocab).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    torch::Tensor h = model->embed_tokens(ids);
    for (const auto& layer : *model->layers) h = layer->as<TinyLayerImpl>()->forward(h);
    return lm_head(h);
  }
  TinyBody model{nullptr};
  Linear lm_head{nullptr};
};
TORCH_MODULE(TinyLm);

}  // namespace dsft::peft::testing
