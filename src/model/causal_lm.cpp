// CausalLM: embeddings -> decoder layers -> final norm -> lm_head, the mask and RoPE tables built
// once per forward, the KV cache threaded through, plus HF-style random initialisation.
#include "dsft/model/causal_lm.h"

#include <algorithm>

#include "dsft/util/error.h"

namespace dsft::model {

namespace F = torch::nn::functional;

namespace {
std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}
}  // namespace

DecoderImpl::DecoderImpl(const ModelConfig& c, const std::function<DecoderLayer(int64_t)>& build_layer,
                         const BuildOptions& topt) {
  embed_tokens = register_module(
      "embed_tokens", Embedding(EmbeddingOptions(c.vocab_size, c.hidden_size).tensor_options(topt)));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layer_list.push_back(build_layer(l));
    layers->push_back(layer_list.back());
  }
  norm = register_module("norm",
                         RMSNorm(RMSNormOptions(c.hidden_size).eps(c.rms_norm_eps).tensor_options(topt)));
}

CausalLMImpl::CausalLMImpl(ModelConfig config, std::shared_ptr<const Rope> rope,
                           const std::function<DecoderLayer(int64_t)>& build_layer, const BuildOptions& topt)
    : config_(std::move(config)), rope_(std::move(rope)) {
  model = register_module("model", Decoder(config_, build_layer, topt));
  if (!config_.tie_word_embeddings)
    lm_head = register_module("lm_head", make_linear(config_.hidden_size, config_.vocab_size, false, topt));
}

KvCache CausalLMImpl::make_cache() const {
  KvCache cache;
  cache.layers.resize(config_.num_hidden_layers);
  return cache;
}

torch::Tensor CausalLMImpl::hidden_states(const torch::Tensor& input_ids, const ForwardOptions& opt) {
  if (input_ids.dim() != 2)
    throw Error("expected input_ids of shape [batch, seq] (got " + shape_of(input_ids) + ")");
  if (input_ids.scalar_type() != torch::kInt64 && input_ids.scalar_type() != torch::kInt32)
    throw Error("expected integer input_ids (got " + std::string(c10::toString(input_ids.scalar_type())) +
                ")");
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  if (opt.cache && static_cast<int64_t>(opt.cache->layers.size()) != config_.num_hidden_layers)
    throw Error("KV cache has " + std::to_string(opt.cache->layers.size()) + " layers, the model " +
                std::to_string(config_.num_hidden_layers) + " (make it with make_cache())");
  const int64_t past = opt.cache ? opt.cache->length() : 0;
  const int64_t S = past + T;
  const auto device = input_ids.device();
  if (T > 0) {
    auto mx = input_ids.max().item<int64_t>(), mn = input_ids.min().item<int64_t>();
    if (mn < 0 || mx >= config_.vocab_size)
      throw Error("input id " + std::to_string(mn < 0 ? mn : mx) + " is outside the vocabulary [0, " +
                  std::to_string(config_.vocab_size) + ")");
  }

  if (!opt.spans.empty()) {
    if (opt.cache || opt.attention_mask.defined())
      throw Error("attention spans cannot be combined with a KV cache or an attention_mask");
    int64_t row = 0, next = 0;  // the position the next span must start at
    for (const Span& sp : opt.spans) {
      if (sp.row == row + 1 && next == T) row = sp.row, next = 0;
      if (sp.row != row || sp.begin != next || sp.length <= 0)
        throw Error("attention spans must cover every position of every row in order (span at row " +
                    std::to_string(sp.row) + ", position " + std::to_string(sp.begin) + ", length " +
                    std::to_string(sp.length) + ")");
      next += sp.length;
    }
    if (row != B - 1 || next != T)
      throw Error("attention spans cover " + std::to_string(row) + " rows and " + std::to_string(next) +
                  " positions of the last; the input is [" + std::to_string(B) + ", " + std::to_string(T) + "]");
  }

  AttentionContext ctx;
  torch::Tensor pos = opt.position_ids;
  if (pos.defined()) {
    if (pos.dim() == 1) pos = pos.unsqueeze(0);
    if (pos.dim() != 2 || pos.size(1) != T || (pos.size(0) != B && pos.size(0) != 1))
      throw Error("expected position_ids of shape [" + std::to_string(B) + ", " + std::to_string(T) +
                  "] (got " + shape_of(opt.position_ids) + ")");
    pos = pos.to(device).expand({B, T});
  } else {
    pos = torch::arange(past, S, torch::TensorOptions().dtype(torch::kInt64).device(device))
              .unsqueeze(0)
              .expand({B, T});
  }
  ctx.rope = rope_->tables(pos);

  torch::Tensor mask;  // bool [B|1, 1, T, S]
  std::optional<torch::Tensor> span_mask;
  if (!opt.spans.empty()) {
    ctx.packing = pack_spans(opt.spans, B, T, device);
    if (!ctx.packing) {
      // Not worth regrouping: the block-diagonal mask of the same records.
      auto seg = torch::empty({B, T}, torch::kInt64);
      auto* sp = seg.data_ptr<int64_t>();
      for (size_t i = 0; i < opt.spans.size(); ++i)
        for (int64_t j = 0; j < opt.spans[i].length; ++j)
          sp[opt.spans[i].row * T + opt.spans[i].begin + j] = static_cast<int64_t>(i);
      span_mask = document_mask(seg.to(device)).unsqueeze(1);
    }
  }
  if (T > 1 && !ctx.packing)
    mask = torch::ones({T, S}, torch::TensorOptions().dtype(torch::kBool).device(device))
               .tril(past)
               .view({1, 1, T, S});
  if (span_mask) mask = mask.defined() ? mask.logical_and(*span_mask) : *span_mask;
  if (opt.attention_mask.defined()) {
    auto m = opt.attention_mask.to(device);
    if (m.scalar_type() != torch::kBool) m = m.ne(0);
    if (m.dim() == 2 && m.size(0) == B && m.size(1) == S) {
      m = m.view({B, 1, 1, S});
    } else if (m.dim() == 3 && m.size(0) == B && m.size(1) == T && m.size(2) == S) {
      m = m.unsqueeze(1);
    } else if (!(m.dim() == 4 && m.size(0) == B && m.size(1) == 1 && m.size(2) == T && m.size(3) == S)) {
      throw Error("expected attention_mask of shape [B, S], [B, T, S] or [B, 1, T, S] with B " +
                  std::to_string(B) + ", T " + std::to_string(T) + ", S " + std::to_string(S) + " (got " +
                  shape_of(opt.attention_mask) + ")");
    }
    mask = mask.defined() ? mask.logical_and(m) : m;
  }
  ctx.mask = mask;

  auto h = model->embed_tokens->forward(input_ids);  // [B, T, hidden]
  for (size_t l = 0; l < model->layer_list.size(); ++l) {
    if (opt.layer_wrapper && !opt.cache) {
      // Captured by value: a recomputation runs after this function has returned.
      std::shared_ptr<DecoderLayerImpl> layer = model->layer_list[l].ptr();
      h = opt.layer_wrapper([layer, ctx](const torch::Tensor& x) { return layer->forward(x, ctx, nullptr); }, h);
    } else {
      h = model->layer_list[l]->forward(h, ctx, opt.cache ? &opt.cache->layers[l] : nullptr);
    }
  }
  return model->norm->forward(h);
}

torch::Tensor CausalLMImpl::head(const torch::Tensor& hidden) {
  return lm_head ? lm_head->forward(hidden) : F::linear(hidden, model->embed_tokens->weight);
}

torch::Tensor CausalLMImpl::logits(const torch::Tensor& hidden) {
  return head(hidden).to(torch::kFloat32);
}

torch::Tensor CausalLMImpl::forward(const torch::Tensor& input_ids, const ForwardOptions& options) {
  return logits(hidden_states(input_ids, options));
}

std::vector<std::pair<std::string, torch::Tensor>> CausalLMImpl::state_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

torch::Tensor document_mask(const torch::Tensor& segment_ids) {
  if (segment_ids.dim() != 2)
    throw Error("expected segment_ids of shape [B, T] (got " + shape_of(segment_ids) + ")");
  // [B, T, 1] == [B, 1, T] -> [B, T, T]; causality is added by the model.
  return segment_ids.unsqueeze(2).eq(segment_ids.unsqueeze(1));
}

std::vector<Span> document_spans(const torch::Tensor& segment_ids) {
  if (segment_ids.dim() != 2)
    throw Error("expected segment_ids of shape [B, T] (got " + shape_of(segment_ids) + ")");
  const auto ids = segment_ids.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t* p = ids.data_ptr<int64_t>();
  std::vector<Span> spans;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* row = p + b * T;
    std::vector<int64_t> seen;
    for (int64_t t = 0; t < T;) {
      int64_t end = t + 1;
      while (end < T && row[end] == row[t]) ++end;
      if (std::find(seen.begin(), seen.end(), row[t]) != seen.end()) return {};
      seen.push_back(row[t]);
      spans.push_back({b, t, end - t});
      t = end;
    }
  }
  return spans;
}

void init_weights(CausalLMImpl& m, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  const double std_dev = m.config().initializer_range;
  // Drawn in fp32 then copied, so a seed gives the same model in every dtype.
  auto normal = [&](torch::Tensor& t) {
    t.copy_(torch::empty(t.sizes(), torch::kFloat32).normal_(0.0, std_dev));
  };
  for (const auto& item : m.named_modules()) {
    torch::nn::Module* mod = item.value().get();
    if (auto* lin = dynamic_cast<LinearImpl*>(mod)) {
      normal(lin->weight);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* norm = dynamic_cast<RMSNormImpl*>(mod)) {
      norm->weight.fill_(1.0);
    } else if (auto* emb = dynamic_cast<EmbeddingImpl*>(mod)) {
      normal(emb->weight);
      const auto& pad = m.config().pad_token_id;
      if (pad && *pad >= 0 && *pad < emb->weight.size(0)) emb->weight[*pad].zero_();
    } else if (auto* gate = dynamic_cast<MoeGateImpl*>(mod)) {
      normal(gate->weight);
      if (gate->e_score_correction_bias.defined()) gate->e_score_correction_bias.zero_();
    }
  }
}

}  // namespace dsft::model
