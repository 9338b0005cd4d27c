// CausalLM: the one model interface every family builds (embed -> decoder layers -> norm ->
// lm_head), forward to fp32 logits, with optional positions, attention mask and KV cache.
// Parameter names are the HF checkpoint keys (model.layers.0.self_attn.q_proj.weight, ...).
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "dsft/model/config.h"
#include "dsft/model/layers.h"
#include "dsft/model/rope.h"

namespace dsft::model {

// One decoder layer as a function of its input hidden states [B, T, hidden].
using LayerFn = std::function<torch::Tensor(const torch::Tensor&)>;

struct ForwardOptions {
  // int64 [B, T]; default: past + 0 .. past + T - 1 (past = cached length).
  torch::Tensor position_ids;
  // Optional, always combined with the causal mask (S = cached length + T):
  //   [B, S]          key padding, 1/true = real token (HF's attention_mask);
  //   [B, T, S]       or [B, 1, T, S]: bool, true = may attend (e.g. document_mask()).
  torch::Tensor attention_mask;
  // Packed rows as spans (document_spans()): attention runs within each span, causally, with the
  // result of document_mask() but without the T x T work across records. They must cover every
  // position of every row in order; not combined with attention_mask or a cache.
  std::vector<Span> spans;
  KvCache* cache = nullptr;  // appended to when given
  // When set (and no cache is given), each decoder layer runs as layer_wrapper(layer, hidden):
  // training wraps layers this way for gradient checkpointing. `layer` may be called again later
  // (recomputation), so it holds everything it needs.
  std::function<torch::Tensor(const LayerFn& layer, const torch::Tensor& hidden)> layer_wrapper;
};

// The `model.` part: embeddings, layers, final norm.
class DecoderImpl : public torch::nn::Module {
 public:
  DecoderImpl(const ModelConfig& config, const std::function<DecoderLayer(int64_t)>& build_layer,
              const BuildOptions& tensor_options);

  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  std::vector<DecoderLayer> layer_list;  // typed view of `layers`
};
TORCH_MODULE(Decoder);

class CausalLMImpl : public torch::nn::Module {
 public:
  // `build_layer(l)` returns decoder layer l; `rope` is shared by every attention block.
  CausalLMImpl(ModelConfig config, std::shared_ptr<const Rope> rope,
               const std::function<DecoderLayer(int64_t)>& build_layer, const BuildOptions& tensor_options);

  // input_ids int64 [B, T] -> logits fp32 [B, T, vocab_size].
  torch::Tensor forward(const torch::Tensor& input_ids, const ForwardOptions& options = {});
  // The final normalised hidden states [B, T, hidden] (for losses that chunk the lm_head).
  torch::Tensor hidden_states(const torch::Tensor& input_ids, const ForwardOptions& options = {});
  // hidden [.., hidden] -> fp32 logits (tied embeddings reuse embed_tokens.weight).
  torch::Tensor logits(const torch::Tensor& hidden);
  // The same in the model's dtype (for losses that read low-precision logits directly).
  torch::Tensor head(const torch::Tensor& hidden);

  const ModelConfig& config() const { return config_; }
  const Rope& rope() const { return *rope_; }
  KvCache make_cache() const;
  // Every parameter and buffer by checkpoint key.
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;

  Decoder model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  ModelConfig config_;
  std::shared_ptr<const Rope> rope_;
};
TORCH_MODULE(CausalLM);

// Block-diagonal causal mask for packed sequences: segment_ids int [B, T] (one id per document)
// -> bool [B, T, T], true where query and key belong to the same document.
torch::Tensor document_mask(const torch::Tensor& segment_ids);
// The same documents as spans (maximal runs of one id per row), for ForwardOptions::spans. Empty
// when an id occurs in two separate runs of a row (those positions attend to each other under
// document_mask(), which spans cannot express).
std::vector<Span> document_spans(const torch::Tensor& segment_ids);

// HF-style initialisation: matrices and embeddings N(0, initializer_range), biases and
// e_score_correction_bias 0, norms 1. Deterministic for a given seed.
void init_weights(CausalLMImpl& model, uint64_t seed);

}  // namespace dsft::model
