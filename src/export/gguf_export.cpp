// HF model directory -> GGUF for llama.cpp (llama, qwen2, deepseek2): the tensor plan (llama.cpp
// names, expected HF shapes from config.json, the layout changes llama.cpp needs), the metadata
// keys of each architecture, and the lazy encoding of each tensor while the file is written.
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "dsft/export/gguf_export.h"
#include "dsft/io/safetensors.h"
#include "dsft/model/config.h"
#include "dsft/model/load.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "export/gguf_plan.h"

namespace dsft::exporter {

namespace fs = std::filesystem;
using io::GgmlType;
using io::GgufValue;

GgufOutType parse_gguf_out_type(const std::string& name) {
  if (name == "f32") return GgufOutType::f32;
  if (name == "f16") return GgufOutType::f16;
  if (name == "bf16") return GgufOutType::bf16;
  if (name == "q8_0") return GgufOutType::q8_0;
  throw Error("unknown GGUF output type '" + name + "' (expected f32, f16, bf16 or q8_0)");
}

const char* gguf_out_type_name(GgufOutType type) {
  switch (type) {
    case GgufOutType::f32: return "f32";
    case GgufOutType::f16: return "f16";
    case GgufOutType::bf16: return "bf16";
    case GgufOutType::q8_0: return "q8_0";
  }
  return "?";
}

std::string gguf_architecture(const std::string& model_type) {
  if (model_type == "llama") return "llama";
  if (model_type == "qwen2") return "qwen2";
  if (model_type == "deepseek_v2" || model_type == "deepseek_v3") return "deepseek2";
  throw Error("model_type '" + model_type + "' has no GGUF export (supported: llama, qwen2, deepseek_v2, deepseek_v3)");
}

namespace detail {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

GgmlType choose_type(GgufOutType out, const std::vector<int64_t>& torch_shape, bool force_f32) {
  if (force_f32 || torch_shape.size() <= 1) return GgmlType::F32;
  switch (out) {
    case GgufOutType::f32: return GgmlType::F32;
    case GgufOutType::f16: return GgmlType::F16;
    case GgufOutType::bf16: return GgmlType::BF16;
    case GgufOutType::q8_0: return torch_shape.back() % 32 == 0 ? GgmlType::Q8_0 : GgmlType::F16;
  }
  return GgmlType::F32;
}

std::vector<uint8_t> encode(const torch::Tensor& t, GgmlType type) {
  const torch::Tensor f = t.to(torch::kFloat32).contiguous();
  const auto n = static_cast<size_t>(f.numel());
  const float* x = f.data_ptr<float>();
  std::vector<uint8_t> out;
  switch (type) {
    case GgmlType::F32:
      out.resize(n * 4);
      std::memcpy(out.data(), x, n * 4);
      break;
    case GgmlType::F16:
    case GgmlType::BF16: {
      out.resize(n * 2);
      auto* o = reinterpret_cast<uint16_t*>(out.data());
      if (type == GgmlType::F16)
        for (size_t i = 0; i < n; ++i) o[i] = io::float_to_fp16(x[i]);
      else
        for (size_t i = 0; i < n; ++i) o[i] = io::float_to_bf16(x[i]);
      break;
    }
    case GgmlType::Q8_0:
      out.resize(n / 32 * 34);
      io::quantize_q8_0(x, static_cast<int64_t>(n), out.data());
      break;
    default:
      throw Error(std::string("cannot encode GGUF tensors as ") + io::ggml_type_name(type));
  }
  return out;
}

// HF's rotate-half q/k rows back to llama.cpp's adjacent pairs (the inverse of HF's permute):
// rows [n_head, 2, d/2] -> [n_head, d/2, 2].
torch::Tensor unpermute_rope(const torch::Tensor& w, int64_t n_head) {
  std::vector<int64_t> s = w.sizes().vec();
  std::vector<int64_t> v = {n_head, 2, s[0] / n_head / 2};
  v.insert(v.end(), s.begin() + 1, s.end());
  return w.reshape(v).transpose(1, 2).reshape(s);
}

void add_planned(io::GgufWriter& w, const std::shared_ptr<io::Checkpoint>& ckpt, PlanItem item, GgufOutType out) {
  const GgmlType type = choose_type(out, item.out_shape, item.force_f32);
  std::vector<int64_t> ne(item.out_shape.rbegin(), item.out_shape.rend());
  auto produce = [ckpt, item, type]() {
    std::vector<torch::Tensor> in;
    in.reserve(item.sources.size());
    for (const auto& s : item.sources) in.push_back(model::tensor_from_view(ckpt->at(s)).to(torch::kFloat32));
    torch::Tensor t = item.transform ? item.transform(in) : in.at(0);
    if (t.sizes().vec() != item.out_shape)
      throw Error("internal: tensor " + item.gguf_name + " came out " + shape_str(t.sizes().vec()) + ", planned " +
                  shape_str(item.out_shape));
    return encode(t, type);
  };
  w.add_tensor({item.gguf_name, type, ne, produce});
}

// Checks every source against the checkpoint before anything is written.
void check_sources(const io::Checkpoint& ckpt, const std::vector<PlanItem>& plan, const std::string& where) {
  std::vector<std::string> missing;
  for (const auto& item : plan)
    for (size_t i = 0; i < item.sources.size(); ++i) {
      const std::string& name = item.sources[i];
      if (!ckpt.contains(name)) {
        missing.push_back(name);
        continue;
      }
      const auto& shape = ckpt.at(name).shape;
      if (shape != item.source_shapes[i])
        throw Error(where + ": tensor " + name + " has shape " + shape_str(shape) + " but config.json implies " +
                    shape_str(item.source_shapes[i]) + "; the weights and config.json do not belong together");
    }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 4; ++i) list += (i ? ", " : "") + missing[i];
    throw Error(where + " lacks " + std::to_string(missing.size()) + " tensors config.json calls for (" + list +
                (missing.size() > 4 ? ", ..." : "") + ")");
  }
}

}  // namespace detail

namespace {

using detail::PlanItem;

std::string layer_key(int64_t l, const std::string& rest) { return "model.layers." + std::to_string(l) + "." + rest; }
std::string blk(int64_t l, const std::string& rest) { return "blk." + std::to_string(l) + "." + rest; }

PlanItem direct(std::string gguf, std::string hf, std::vector<int64_t> shape, bool force_f32 = false) {
  PlanItem p;
  p.gguf_name = std::move(gguf);
  p.sources = {std::move(hf)};
  p.source_shapes = {shape};
  p.out_shape = std::move(shape);
  p.force_f32 = force_f32;
  return p;
}

// llama.cpp's llama3 rope_freqs: the divisor of each frequency (1 high, factor low, blended between).
std::vector<float> llama3_rope_factors(const model::ModelConfig& c) {
  const auto& rs = c.rope_scaling;
  const int64_t dim = c.head_dim;
  const double orig = static_cast<double>(rs.original_max_position_embeddings);
  const double low_wavelen = orig / rs.low_freq_factor, high_wavelen = orig / rs.high_freq_factor;
  std::vector<float> out;
  for (int64_t i = 0; i < dim; i += 2) {
    const float freq = 1.0f / std::pow(static_cast<float>(c.rope_theta), static_cast<float>(i) / static_cast<float>(dim));
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(static_cast<float>(rs.factor));
    } else {
      const double smooth = (orig / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / rs.factor + smooth)));
    }
  }
  return out;
}

void plan_common(const model::ModelConfig& c, std::vector<PlanItem>& plan) {
  const int64_t H = c.hidden_size, V = c.vocab_size;
  plan.push_back(direct("token_embd.weight", "model.embed_tokens.weight", {V, H}));
  plan.push_back(direct("output_norm.weight", "model.norm.weight", {H}));
  if (!c.tie_word_embeddings) plan.push_back(direct("output.weight", "lm_head.weight", {V, H}));
}

void plan_dense_mlp(const model::ModelConfig& c, int64_t l, int64_t ff, std::vector<PlanItem>& plan) {
  const int64_t H = c.hidden_size;
  plan.push_back(direct(blk(l, "ffn_gate.weight"), layer_key(l, "mlp.gate_proj.weight"), {ff, H}));
  plan.push_back(direct(blk(l, "ffn_up.weight"), layer_key(l, "mlp.up_proj.weight"), {ff, H}));
  plan.push_back(direct(blk(l, "ffn_down.weight"), layer_key(l, "mlp.down_proj.weight"), {H, ff}));
  if (c.mlp_bias) {
    plan.push_back(direct(blk(l, "ffn_gate.bias"), layer_key(l, "mlp.gate_proj.bias"), {ff}));
    plan.push_back(direct(blk(l, "ffn_up.bias"), layer_key(l, "mlp.up_proj.bias"), {ff}));
    plan.push_back(direct(blk(l, "ffn_down.bias"), layer_key(l, "mlp.down_proj.bias"), {H}));
  }
}

void plan_llama_qwen2(const model::ModelConfig& c, bool permute_qk, std::vector<PlanItem>& plan) {
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_attention_heads, nkv = c.num_key_value_heads;
  plan_common(c, plan);
  if (c.model_type == "llama" && c.rope_scaling.type == model::RopeType::llama3) {
    PlanItem p;
    p.gguf_name = "rope_freqs.weight";
    const std::vector<float> f = llama3_rope_factors(c);
    p.out_shape = {static_cast<int64_t>(f.size())};
    p.transform = [f](const std::vector<torch::Tensor>&) {
      return torch::tensor(std::vector<float>(f.begin(), f.end()), torch::kFloat32);
    };
    p.force_f32 = true;
    plan.push_back(p);
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    plan.push_back(direct(blk(l, "attn_norm.weight"), layer_key(l, "input_layernorm.weight"), {H}));
    plan.push_back(direct(blk(l, "ffn_norm.weight"), layer_key(l, "post_attention_layernorm.weight"), {H}));
    struct Proj {
      const char* gguf;
      const char* hf;
      int64_t rows, cols, heads;  // heads: rope heads to un-permute (0: none)
    };
    const Proj projs[] = {{"attn_q", "q_proj", nh * hd, H, permute_qk ? nh : 0},
                          {"attn_k", "k_proj", nkv * hd, H, permute_qk ? nkv : 0},
                          {"attn_v", "v_proj", nkv * hd, H, 0},
                          {"attn_output", "o_proj", H, nh * hd, 0}};
    for (const Proj& pr : projs) {
      PlanItem w = direct(blk(l, std::string(pr.gguf) + ".weight"), layer_key(l, std::string("self_attn.") + pr.hf + ".weight"),
                          {pr.rows, pr.cols});
      const bool is_o = std::string(pr.hf) == "o_proj";
      const bool bias = is_o ? c.o_bias : c.qkv_bias;
      PlanItem b = direct(blk(l, std::string(pr.gguf) + ".bias"), layer_key(l, std::string("self_attn.") + pr.hf + ".bias"),
                          {pr.rows});
      if (pr.heads) {
        const int64_t heads = pr.heads;
        w.unpermute_heads = b.unpermute_heads = heads;
        w.transform = b.transform = [heads](const std::vector<torch::Tensor>& in) {
          return detail::unpermute_rope(in[0], heads);
        };
      }
      plan.push_back(w);
      if (bias) plan.push_back(b);
    }
    plan_dense_mlp(c, l, c.intermediate_size, plan);
  }
}

void plan_deepseek2(const model::ModelConfig& c, std::vector<PlanItem>& plan) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim,
                vd = c.v_head_dim, kvr = c.kv_lora_rank;
  plan_common(c, plan);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    plan.push_back(direct(blk(l, "attn_norm.weight"), layer_key(l, "input_layernorm.weight"), {H}));
    plan.push_back(direct(blk(l, "ffn_norm.weight"), layer_key(l, "post_attention_layernorm.weight"), {H}));
    if (c.q_lora_rank) {
      const int64_t qr = *c.q_lora_rank;
      plan.push_back(direct(blk(l, "attn_q_a.weight"), layer_key(l, "self_attn.q_a_proj.weight"), {qr, H}));
      plan.push_back(direct(blk(l, "attn_q_a_norm.weight"), layer_key(l, "self_attn.q_a_layernorm.weight"), {qr}));
      plan.push_back(direct(blk(l, "attn_q_b.weight"), layer_key(l, "self_attn.q_b_proj.weight"), {nh * (nope + rope), qr}));
    } else {
      plan.push_back(direct(blk(l, "attn_q.weight"), layer_key(l, "self_attn.q_proj.weight"), {nh * (nope + rope), H}));
    }
    plan.push_back(direct(blk(l, "attn_kv_a_mqa.weight"), layer_key(l, "self_attn.kv_a_proj_with_mqa.weight"), {kvr + rope, H}));
    plan.push_back(direct(blk(l, "attn_kv_a_norm.weight"), layer_key(l, "self_attn.kv_a_layernorm.weight"), {kvr}));
    // kv_b_proj [nh * (nope + v), kvr] viewed [nh, nope + v, kvr]: k_b = the nope rows transposed to
    // [nh, kvr, nope]; v_b = the v rows [nh, v, kvr] (llama.cpp's absorbed MLA).
    const std::string kv_b = layer_key(l, "self_attn.kv_b_proj.weight");
    PlanItem kb, vb;
    kb.gguf_name = blk(l, "attn_k_b.weight");
    kb.sources = vb.sources = {kv_b};
    kb.source_shapes = vb.source_shapes = {{nh * (nope + vd), kvr}};
    kb.out_shape = {nh, kvr, nope};
    kb.transform = [=](const std::vector<torch::Tensor>& in) {
      return in[0].view({nh, nope + vd, kvr}).narrow(1, 0, nope).transpose(1, 2).contiguous();
    };
    vb.gguf_name = blk(l, "attn_v_b.weight");
    vb.out_shape = {nh, vd, kvr};
    vb.transform = [=](const std::vector<torch::Tensor>& in) {
      return in[0].view({nh, nope + vd, kvr}).narrow(1, nope, vd).contiguous();
    };
    plan.push_back(kb);
    plan.push_back(vb);
    plan.push_back(direct(blk(l, "attn_output.weight"), layer_key(l, "self_attn.o_proj.weight"), {H, nh * vd}));

    if (!c.is_moe_layer(l)) {
      plan_dense_mlp(c, l, c.intermediate_size, plan);
      continue;
    }
    const int64_t E = c.n_routed_experts, mi = c.moe_intermediate_size;
    plan.push_back(direct(blk(l, "ffn_gate_inp.weight"), layer_key(l, "mlp.gate.weight"), {E, H}, /*force_f32=*/true));
    if (c.topk_method == model::TopkMethod::noaux_tc)
      plan.push_back(direct(blk(l, "exp_probs_b.bias"), layer_key(l, "mlp.gate.e_score_correction_bias"), {E}));
    struct Exp {
      const char* gguf;
      const char* hf;
      int64_t rows, cols;
    };
    for (const Exp& e : {Exp{"ffn_gate_exps", "gate_proj", mi, H}, Exp{"ffn_up_exps", "up_proj", mi, H},
                         Exp{"ffn_down_exps", "down_proj", H, mi}}) {
      PlanItem p;
      p.gguf_name = blk(l, std::string(e.gguf) + ".weight");
      for (int64_t x = 0; x < E; ++x) {
        p.sources.push_back(layer_key(l, "mlp.experts." + std::to_string(x) + "." + e.hf + ".weight"));
        p.source_shapes.push_back({e.rows, e.cols});
      }
      p.out_shape = {E, e.rows, e.cols};
      p.transform = [](const std::vector<torch::Tensor>& in) { return torch::stack(in, 0); };
      plan.push_back(p);
    }
    if (c.n_shared_experts > 0) {
      const int64_t si = mi * c.n_shared_experts;
      plan.push_back(direct(blk(l, "ffn_gate_shexp.weight"), layer_key(l, "mlp.shared_experts.gate_proj.weight"), {si, H}));
      plan.push_back(direct(blk(l, "ffn_up_shexp.weight"), layer_key(l, "mlp.shared_experts.up_proj.weight"), {si, H}));
      plan.push_back(direct(blk(l, "ffn_down_shexp.weight"), layer_key(l, "mlp.shared_experts.down_proj.weight"), {H, si}));
    }
  }
}

}  // namespace

std::vector<PlanItem> detail::plan_model(const model::ModelConfig& c) {
  std::vector<PlanItem> plan;
  if (gguf_architecture(c.model_type) == "deepseek2") plan_deepseek2(c, plan);
  else plan_llama_qwen2(c, /*permute_qk=*/c.model_type == "llama", plan);
  return plan;
}

namespace {

// Checkpoint tensors the export leaves out on purpose.
bool skipped_tensor(const model::ModelConfig& c, const std::string& name) {
  if (name.size() > 9 && name.compare(name.size() - 9, 9, ".inv_freq") == 0) return true;
  if (c.tie_word_embeddings && name == "lm_head.weight") return true;
  const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) == 0) {
    const int64_t l = std::atoll(name.c_str() + prefix.size());
    if (l >= c.num_hidden_layers) return true;  // DeepSeek-V3's multi-token-prediction layers
  }
  return false;
}

void set_arch_metadata(io::GgufWriter& w, const model::ModelConfig& c, const std::string& arch,
                       std::vector<std::string>& warnings) {
  auto key = [&](const std::string& k) { return arch + "." + k; };
  auto u32 = [&](const std::string& k, int64_t v) { w.set(key(k), GgufValue::u32(static_cast<uint32_t>(v))); };
  auto f32 = [&](const std::string& k, double v) { w.set(key(k), GgufValue::f32(static_cast<float>(v))); };
  u32("vocab_size", c.vocab_size);
  u32("context_length", c.max_position_embeddings);
  u32("embedding_length", c.hidden_size);
  u32("block_count", c.num_hidden_layers);
  u32("feed_forward_length", c.intermediate_size);
  u32("attention.head_count", c.num_attention_heads);
  f32("rope.freq_base", c.rope_theta);
  f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  const auto& rs = c.rope_scaling;

  if (arch != "deepseek2") {
    u32("attention.head_count_kv", c.num_key_value_heads);
    u32("rope.dimension_count", c.head_dim);
    if (c.head_dim * c.num_attention_heads != c.hidden_size) {
      u32("attention.key_length", c.head_dim);
      u32("attention.value_length", c.head_dim);
    }
    switch (rs.type) {
      case model::RopeType::none:
      case model::RopeType::llama3:  // carried by the rope_freqs tensor
        break;
      case model::RopeType::linear:
        w.set(key("rope.scaling.type"), GgufValue::string("linear"));
        f32("rope.scaling.factor", rs.factor);
        break;
      case model::RopeType::yarn:
        w.set(key("rope.scaling.type"), GgufValue::string("yarn"));
        f32("rope.scaling.factor", rs.factor);
        u32("rope.scaling.original_context_length", rs.original_max_position_embeddings);
        if (rs.attention_factor) f32("rope.scaling.attn_factor", *rs.attention_factor);
        break;
      case model::RopeType::dynamic:
        throw Error("rope_scaling type dynamic has no GGUF equivalent (llama.cpp has no dynamic NTK scaling)");
    }
    return;
  }

  // deepseek2: MLA declared as MQA over the compressed cache (one KV head of kv_lora_rank + rope).
  u32("attention.head_count_kv", 1);
  u32("leading_dense_block_count", c.first_k_dense_replace);
  if (c.q_lora_rank) u32("attention.q_lora_rank", *c.q_lora_rank);
  u32("attention.kv_lora_rank", c.kv_lora_rank);
  u32("attention.key_length", c.kv_lora_rank + c.qk_rope_head_dim);
  u32("attention.value_length", c.kv_lora_rank);
  u32("attention.key_length_mla", c.qk_nope_head_dim + c.qk_rope_head_dim);
  u32("attention.value_length_mla", c.v_head_dim);
  u32("rope.dimension_count", c.qk_rope_head_dim);
  u32("expert_feed_forward_length", c.moe_intermediate_size);
  u32("expert_count", c.n_routed_experts);
  u32("expert_shared_count", c.n_shared_experts);
  u32("expert_used_count", c.num_experts_per_tok);
  f32("expert_weights_scale", c.routed_scaling_factor);
  w.set(key("expert_weights_norm"), GgufValue::boolean(c.norm_topk_prob));
  u32("expert_gating_func", c.scoring_func == model::ScoringFunc::sigmoid ? 2 : 1);
  u32("expert_group_count", c.n_group);
  u32("expert_group_used_count", c.topk_group);
  if (c.n_routed_experts > 0 && c.moe_layer_freq != 1)
    throw Error("moe_layer_freq " + std::to_string(c.moe_layer_freq) +
                " has no GGUF equivalent: llama.cpp's deepseek2 makes every layer after the leading dense ones MoE");
  if (rs.type == model::RopeType::yarn) {
    w.set(key("rope.scaling.type"), GgufValue::string("yarn"));
    f32("rope.scaling.factor", rs.factor);
    u32("rope.scaling.original_context_length", rs.original_max_position_embeddings);
    // llama.cpp derives DeepSeek's mscale from this (0.1 * mscale_all_dim), as its converter writes it.
    if (rs.mscale_all_dim != 0.0) f32("rope.scaling.yarn_log_multiplier", 0.1 * rs.mscale_all_dim);
    f32("rope.scaling.yarn_beta_fast", rs.beta_fast);
    f32("rope.scaling.yarn_beta_slow", rs.beta_slow);
  } else if (rs.type == model::RopeType::linear) {
    w.set(key("rope.scaling.type"), GgufValue::string("linear"));
    f32("rope.scaling.factor", rs.factor);
  } else if (rs.type != model::RopeType::none) {
    throw Error(std::string("rope_scaling type ") + model::rope_type_name(rs.type) +
                " has no GGUF equivalent for deepseek2 (expected yarn or linear)");
  }
  if (!c.q_lora_rank && c.num_hidden_layers != 27 && c.num_hidden_layers != 26)
    warnings.push_back("llama.cpp treats a deepseek2 model as having no q-LoRA (q_proj) only at 26 or 27 layers "
                       "(DeepSeek-V2-Lite); this " + std::to_string(c.num_hidden_layers) +
                       "-layer model without q_lora_rank will not load there");
}

}  // namespace

void detail::check_output(const std::string& path, bool overwrite) {
  if (path.empty()) throw Error("no output path given for the GGUF file");
  if (fs::is_directory(path)) throw Error("output path " + path + " is a directory; name the .gguf file");
  if (!overwrite && fs::exists(path)) throw Error("output file " + path + " exists; pass --force to overwrite it");
  const fs::path parent = fs::absolute(path).parent_path();
  if (!fs::is_directory(parent)) throw Error("output directory " + parent.string() + " does not exist");
}

namespace {

int32_t file_type(GgufOutType t) {
  switch (t) {
    case GgufOutType::f32: return 0;
    case GgufOutType::f16: return 1;
    case GgufOutType::q8_0: return 7;
    case GgufOutType::bf16: return 32;
  }
  return 1;
}

}  // namespace

GgufExportReport export_gguf(const GgufExportOptions& o) {
  detail::check_output(o.output_path, o.overwrite);
  if (!o.modelfile_path.empty()) detail::check_output(o.modelfile_path, o.overwrite);
  const fs::path dir(o.model_dir);
  if (!fs::exists(dir / "config.json")) throw Error("no config.json in " + o.model_dir + ": not an HF model directory");
  const model::ModelConfig c = model::load_config(o.model_dir);
  const std::string arch = gguf_architecture(c.model_type);
  auto ckpt = std::make_shared<io::Checkpoint>(io::Checkpoint::open(o.model_dir));

  GgufExportReport report;
  report.architecture = arch;
  std::vector<PlanItem> plan = detail::plan_model(c);
  detail::check_sources(*ckpt, plan, "checkpoint " + o.model_dir);
  std::set<std::string> used;
  for (const auto& p : plan) used.insert(p.sources.begin(), p.sources.end());
  std::vector<std::string> unused;
  for (const auto& name : ckpt->names())
    if (!used.count(name) && !skipped_tensor(c, name)) unused.push_back(name);
  if (!unused.empty())
    throw Error("checkpoint " + o.model_dir + " has " + std::to_string(unused.size()) +
                " tensors the " + arch + " GGUF layout has no place for (first: " + unused.front() +
                "); is config.json the one these weights were trained with?");

  io::GgufWriter w;
  w.set("general.architecture", GgufValue::string(arch));
  w.set("general.type", GgufValue::string("model"));
  std::string name = o.name.empty() ? fs::absolute(dir).lexically_normal().filename().string() : o.name;
  if (name.empty() || name == ".") name = fs::absolute(dir).parent_path().filename().string();
  w.set("general.name", GgufValue::string(name));
  set_arch_metadata(w, c, arch, report.warnings);
  w.set("general.file_type", GgufValue::u32(static_cast<uint32_t>(file_type(o.out_type))));
  w.set("general.quantization_version", GgufValue::u32(2));
  const std::string tok_dir = o.tokenizer_dir.empty() ? o.model_dir : o.tokenizer_dir;
  const VocabSummary vocab =
      add_tokenizer_metadata(w, tok_dir, c.vocab_size, o.tokenizer_pre, (dir / "config.json").string());
  report.tokenizer_pre = vocab.pre;

  for (auto& p : plan) detail::add_planned(w, ckpt, std::move(p), o.out_type);
  for (const auto& warning : report.warnings) util::log_warn(warning);
  w.write(o.output_path);
  report.path = o.output_path;
  report.n_tensors = w.tensors().size();
  report.bytes = w.file_size();

  if (!o.modelfile_path.empty()) {
    ModelfileOptions m;
    const fs::path rel = fs::absolute(o.output_path).lexically_relative(fs::absolute(o.modelfile_path).parent_path());
    m.gguf_file = "./" + rel.string();
    m.family = vocab.family;
    if (vocab.eos) {
      const auto* tokens = w.find("tokenizer.ggml.tokens");
      m.eos_token = tokens->items().at(static_cast<size_t>(*vocab.eos)).as_string();
    }
    util::write_file_atomic(o.modelfile_path, render_modelfile(m));
  }
  return report;
}

}  // namespace dsft::exporter
