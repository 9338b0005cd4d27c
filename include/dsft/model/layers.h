// The shared building blocks every family is composed from: Linear (dsft::peft::Linear, which
// carries LoRA adapters and quantised bases), RMSNorm, the SwiGLU MLP, DeepSeekMoE (router +
// grouped expert dispatch), GQA attention, MLA, and the pre-norm decoder layer. Registered names equal HF
// checkpoint key segments.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "dsft/model/config.h"
#include "dsft/model/rope.h"
#include "dsft/peft/lora_linear.h"

namespace dsft::model {

// dtype and device every parameter is created with: building directly in the target dtype avoids
// a second full copy of the weights at load time.
using BuildOptions = torch::TensorOptions;

// Where the blocks compute in fp32 whatever the model's dtype (norms, RoPE, softmax, router):
// fp32, or fp64 for an fp64 model (which is then fp64 throughout, for numerical checks).
inline torch::Dtype accumulation_dtype(torch::Dtype dtype) {
  return dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// ---------------------------------------------------------------------------------------------
// Linear

// Every projection is a dsft::peft::Linear (y = x Wᵀ + b), so that LoRA, quantised frozen bases
// and merging apply to the model as built, with HF keys unchanged (`...q_proj.lora_A.weight`).
using Linear = peft::Linear;
using LinearImpl = peft::LinearImpl;
using LinearOptions = peft::LinearOptions;

// A projection with uninitialised parameters in the build dtype/device: loading fills them,
// init_weights() initialises them; nothing is computed twice.
Linear make_linear(int64_t in_features, int64_t out_features, bool bias, const BuildOptions& tensor_options);

// ---------------------------------------------------------------------------------------------
// RMSNorm

struct RMSNormOptions {
  explicit RMSNormOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(BuildOptions, tensor_options) = {};
};

// y = weight * cast(x * rsqrt(mean(x²) + eps)), the normalisation computed in fp32.
class RMSNormImpl : public torch::nn::Module {
 public:
  explicit RMSNormImpl(RMSNormOptions options);
  void reset();
  torch::Tensor forward(const torch::Tensor& x);

  RMSNormOptions options;
  torch::Tensor weight;  // [dim]
};
TORCH_MODULE(RMSNorm);

// The RMSNorm formula: on the CPU one fused pass per row forward and backward (fp32 statistics,
// fp64 for double), elsewhere as tensor ops.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
// (x + delta, rms_norm(x + delta, weight, eps)): the residual add and the norm after it, on the
// CPU in one pass each way for fp32 and bf16.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& delta,
                                                     const torch::Tensor& weight, double eps);

// ---------------------------------------------------------------------------------------------
// Token embedding

struct EmbeddingOptions {
  EmbeddingOptions(int64_t num_embeddings, int64_t dim) : num_embeddings_(num_embeddings), dim_(dim) {}
  TORCH_ARG(int64_t, num_embeddings);
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(BuildOptions, tensor_options) = {};
};

class EmbeddingImpl : public torch::nn::Module {
 public:
  explicit EmbeddingImpl(EmbeddingOptions options);
  void reset();
  torch::Tensor forward(const torch::Tensor& ids);  // [B, T] -> [B, T, dim]

  EmbeddingOptions options;
  torch::Tensor weight;  // [num_embeddings, dim]
};
TORCH_MODULE(Embedding);

// ---------------------------------------------------------------------------------------------
// Feed-forward blocks

// Interface of a decoder layer's `mlp` child (dense SwiGLU or MoE).
class FeedForwardBlock : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;  // [..., hidden] -> [..., hidden]
};

struct MlpOptions {
  MlpOptions(int64_t hidden_size, int64_t intermediate_size)
      : hidden_size_(hidden_size), intermediate_size_(intermediate_size) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, intermediate_size);
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(BuildOptions, tensor_options) = {};
};

// SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x)).
class MlpImpl : public FeedForwardBlock {
 public:
  explicit MlpImpl(MlpOptions options);
  void reset();
  torch::Tensor forward(const torch::Tensor& x) override;

  MlpOptions options;
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

// silu(gate) · up: on the CPU (fp32, bf16) one fused pass each way, elsewhere as tensor ops.
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up);

struct MoeOptions {
  MoeOptions(int64_t hidden_size, int64_t moe_intermediate_size, int64_t n_routed_experts, int64_t top_k)
      : hidden_size_(hidden_size),
        moe_intermediate_size_(moe_intermediate_size),
        n_routed_experts_(n_routed_experts),
        top_k_(top_k) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, moe_intermediate_size);
  TORCH_ARG(int64_t, n_routed_experts);
  TORCH_ARG(int64_t, top_k);
  TORCH_ARG(int64_t, n_shared_experts) = 0;
  TORCH_ARG(TopkMethod, topk_method) = TopkMethod::greedy;
  TORCH_ARG(ScoringFunc, scoring_func) = ScoringFunc::softmax;
  TORCH_ARG(int64_t, n_group) = 1;
  TORCH_ARG(int64_t, topk_group) = 1;
  TORCH_ARG(bool, norm_topk_prob) = false;
  TORCH_ARG(double, routed_scaling_factor) = 1.0;
  // deepseek_v2 (DeepSeek's remote code) applies routed_scaling_factor only when the weights are
  // not normalised; deepseek_v3 always applies it.
  TORCH_ARG(bool, scale_only_unnormalised) = false;
  TORCH_ARG(BuildOptions, tensor_options) = {};
};

// The routing decision for N tokens.
struct Routing {
  torch::Tensor experts;  // int64 [N, top_k]
  torch::Tensor weights;  // fp32 (fp64 model: fp64) [N, top_k], differentiable w.r.t. the router weight
};

// The router (`mlp.gate`): fp32 scores, expert choice, weights.
class MoeGateImpl : public torch::nn::Module {
 public:
  explicit MoeGateImpl(MoeOptions options);
  void reset();
  Routing forward(const torch::Tensor& x);  // x: [N, hidden]

  MoeOptions options;
  torch::Tensor weight;                   // [n_routed_experts, hidden]
  torch::Tensor e_score_correction_bias;  // buffer [n_routed_experts] fp32 (noaux_tc only)
};
TORCH_MODULE(MoeGate);

// DeepSeekMoE: Σ_k w_k · expert_k(x) + shared_experts(x). Tokens are bucketed by expert and each
// expert runs once on its whole batch of tokens.
class MoeImpl : public FeedForwardBlock {
 public:
  explicit MoeImpl(MoeOptions options);
  void reset();
  torch::Tensor forward(const torch::Tensor& x) override;

  MoeOptions options;
  MoeGate gate{nullptr};
  torch::nn::ModuleList experts{nullptr};             // Mlp each: experts.{e}.gate_proj ...
  Mlp shared_experts{nullptr};                        // width moe_intermediate_size * n_shared_experts
  std::vector<std::shared_ptr<MlpImpl>> expert_list;  // typed view of `experts`
};
TORCH_MODULE(Moe);

// Grouped expert dispatch: x [N, H], routing for N tokens, experts as Mlp modules.
// Returns Σ_k w_k · expert_k(x) in x's dtype (accumulated in fp32).
torch::Tensor moe_dispatch(const torch::Tensor& x, const Routing& routing,
                           const std::vector<std::shared_ptr<MlpImpl>>& experts);

// ---------------------------------------------------------------------------------------------
// Attention

// Per-layer key/value cache for incremental decoding. GQA keeps rotated K and V
// ([B, n_kv_heads, S, head_dim]); MLA keeps the compressed latent: `k` = normalised c_kv
// [B, S, kv_lora_rank] and `v` = rotated k_pe [B, 1, S, qk_rope_head_dim].
struct LayerCache {
  torch::Tensor k;
  torch::Tensor v;
  int64_t length() const { return k.defined() ? k.size(k.dim() == 3 ? 1 : 2) : 0; }
};

struct KvCache {
  std::vector<LayerCache> layers;
  int64_t length() const { return layers.empty() ? 0 : layers.front().length(); }
};

// One record of a packed row: positions [begin, begin + length) of row `row`, which attend
// (causally) to each other only.
struct Span {
  int64_t row = 0;
  int64_t begin = 0;
  int64_t length = 0;
};

// Packed records regrouped for attention: each record goes whole into one of `chunks` rows of
// `length` slots (first-fit decreasing), so that attention costs chunks·length² instead of B·T²
// when rows hold several short records.
struct SpanPacking {
  int64_t chunks = 0;
  int64_t length = 0;
  torch::Tensor gather;   // int64 [chunks * length]: the token (b·T + t) in each slot (free slots: 0)
  torch::Tensor source;   // int64 [chunks * length], CPU: the same with -1 for free slots
  torch::Tensor scatter;  // int64 [B·T]: the slot holding each token
  torch::Tensor blocked;  // bool [chunks, 1, length, length]: true = may not attend
};

// The packing of `spans` (covering a [B, T] batch) with the cheapest row length, or nullopt when
// it would not cut the attention work of whole rows by at least a third.
std::optional<SpanPacking> pack_spans(const std::vector<Span>& spans, int64_t B, int64_t T,
                                      const torch::Device& device);

// What every attention layer of one forward pass shares.
struct AttentionContext {
  RopeTables rope;     // tables for the T current positions
  torch::Tensor mask;  // bool [B|1, 1, T, S], true = may attend; undefined = none needed
  // Set (training on packed rows, no cache): attention runs on the regrouped records instead of
  // on whole rows under `mask`.
  std::optional<SpanPacking> packing;
};

// Interface of a decoder layer's `self_attn` child.
class AttentionBlock : public torch::nn::Module {
 public:
  // x: [B, T, hidden]. With a cache, the new keys/values are appended to it.
  virtual torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache) = 0;
};

// softmax(q kᵀ · scale + mask) v with scores and softmax in fp32, under ctx.mask, or causal
// within each record of ctx.packing (the same result, without the masked-out work).
// q [B, H, T, D], k [B, H, S, D], v [B, H, S, Dv] -> [B, H, T, Dv].
torch::Tensor attention_core(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionContext& ctx, double scale);

struct GqaAttentionOptions {
  GqaAttentionOptions(int64_t hidden_size, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim)
      : hidden_size_(hidden_size), n_heads_(n_heads), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, n_heads);
  TORCH_ARG(int64_t, n_kv_heads);
  TORCH_ARG(int64_t, head_dim);
  TORCH_ARG(bool, qkv_bias) = false;
  TORCH_ARG(bool, o_bias) = false;
  TORCH_ARG(BuildOptions, tensor_options) = {};
};

// Grouped-query attention (MHA when n_kv_heads == n_heads): kv heads are repeat_interleave'd.
class GqaAttentionImpl : public AttentionBlock {
 public:
  GqaAttentionImpl(GqaAttentionOptions options, std::shared_ptr<const Rope> rope);
  void reset();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache) override;

  GqaAttentionOptions options;
  std::shared_ptr<const Rope> rope;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(GqaAttention);

struct MlaOptions {
  MlaOptions(int64_t hidden_size, int64_t n_heads) : hidden_size_(hidden_size), n_heads_(n_heads) {}
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(int64_t, n_heads);
  TORCH_ARG(std::optional<int64_t>, q_lora_rank) = std::nullopt;
  TORCH_ARG(int64_t, kv_lora_rank) = 512;
  TORCH_ARG(int64_t, qk_nope_head_dim) = 128;
  TORCH_ARG(int64_t, qk_rope_head_dim) = 64;
  TORCH_ARG(int64_t, v_head_dim) = 128;
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(double, softmax_scale) = 0.0;  // 0: (nope + rope)^-1/2
  TORCH_ARG(BuildOptions, tensor_options) = {};
};

// Multi-head latent attention (DeepSeek V2/V3), naive form: K/V are expanded from the latent per
// head. q_a_layernorm / kv_a_layernorm use eps 1e-6 as in DeepSeek's code.
class MlaAttentionImpl : public AttentionBlock {
 public:
  MlaAttentionImpl(MlaOptions options, std::shared_ptr<const Rope> rope);
  void reset();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache) override;

  MlaOptions options;
  std::shared_ptr<const Rope> rope;
  Linear q_proj{nullptr};                       // without q-LoRA
  Linear q_a_proj{nullptr}, q_b_proj{nullptr};  // with q-LoRA
  RMSNorm q_a_layernorm{nullptr};
  Linear kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr}, o_proj{nullptr};
  RMSNorm kv_a_layernorm{nullptr};
};
TORCH_MODULE(MlaAttention);

// ---------------------------------------------------------------------------------------------
// Decoder layer

// Pre-norm residual layer: x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(·)).
class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(int64_t hidden_size, double eps, std::shared_ptr<AttentionBlock> self_attn,
                   std::shared_ptr<FeedForwardBlock> mlp, const BuildOptions& tensor_options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache = nullptr);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  std::shared_ptr<AttentionBlock> self_attn;
  std::shared_ptr<FeedForwardBlock> mlp;
};
TORCH_MODULE(DecoderLayer);

}  // namespace dsft::model
