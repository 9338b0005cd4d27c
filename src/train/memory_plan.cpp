// The memory plan: the model is built on the meta device (exact parameter shapes and names, no
// storage) and walked once for weights, adapters and trainable parameters; activations are an
// estimate per token and layer from the shapes the forward pass produces and keeps for backward.
#include "dsft/train/memory_plan.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "dsft/model/registry.h"
#include "dsft/peft/inject.h"
#include "dsft/train/trainer.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::train {
namespace {

int64_t dtype_bytes(const std::string& name) {
  return name == "float32" ? 4 : 2;
}

torch::Dtype dtype_of(const std::string& name) {
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  return torch::kFloat32;
}

int64_t nf4_bytes(int64_t numel, int64_t block, bool double_quant) {
  const int64_t blocks = (numel + block - 1) / block;
  int64_t bytes = (numel + 1) / 2;
  bytes += double_quant ? blocks + ((blocks + 255) / 256) * 4 : blocks * 4;
  return bytes;
}

// Activation bytes one token keeps in decoder layer `l` while the graph is alive (autograd's
// saved tensors and the outputs that feed them). b: bytes per element of the compute dtype; T:
// the sequence length (attention scores are T per head and token, in fp32).
int64_t layer_activation_per_token(const model::ModelConfig& c, int64_t l, int64_t b, int64_t T) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  int64_t bytes = 2 * (4 * H + b * H);  // two RMSNorms: the fp32 copy and the normalised output
  bytes += 8 * nh * T;                  // fp32 scores and softmax probabilities
  if (c.is_deepseek()) {
    const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, v = c.v_head_dim;
    const int64_t kvr = c.kv_lora_rank;
    int64_t e = H + 2 * nh * (nope + rope);                           // input, q before and after RoPE
    if (c.q_lora_rank) e += 2 * *c.q_lora_rank + 2 * *c.q_lora_rank;  // q_a out, its norm (fp32)
    e += (kvr + rope) + 3 * kvr;                                      // kv_a out, norm (fp32 + out)
    e += nh * (nope + v) + nh * (nope + rope) + 2 * nh * v;           // kv_b out, K, V, context
    bytes += b * e + b * H;
  } else {
    const int64_t hd = c.head_dim, nkv = c.num_key_value_heads;
    // normed input, q/k/v, rotated q/k, k/v repeated to every head, context, o_proj output
    bytes += b * (H + nh * hd + 2 * nkv * hd + nh * hd + nkv * hd + 2 * nh * hd + nh * hd + H);
  }
  if (c.is_moe_layer(l)) {
    const int64_t Im = c.moe_intermediate_size, k = c.num_experts_per_tok;
    bytes += 4 * (H + 2 * c.n_routed_experts);     // fp32 router input, logits, scores
    bytes += k * (b * (H + 4 * Im) + 4 * H + 16);  // each chosen expert's copy, its MLP, index
    if (c.n_shared_experts > 0) bytes += b * (H + 4 * Im * c.n_shared_experts);
    bytes += 4 * H;  // fp32 accumulation of the experts
  } else {
    bytes += b * (H + 4 * c.intermediate_size);  // input, gate, up, silu(gate), product
  }
  return bytes;
}

std::string params_text(int64_t n, const char* noun = "parameters") {
  char buf[64];
  if (n >= 1'000'000'000)
    std::snprintf(buf, sizeof buf, "%.2fB %s", n / 1e9, noun);
  else if (n >= 1'000'000)
    std::snprintf(buf, sizeof buf, "%.2fM %s", n / 1e6, noun);
  else
    std::snprintf(buf, sizeof buf, "%lld %s", static_cast<long long>(n), noun);
  return buf;
}

// cudaMemGetInfo through the CUDA runtime libtorch already loaded (no link-time CUDA dependency).
int64_t cuda_free_bytes(int device) {
  using SetDevice = int (*)(int);
  using MemGetInfo = int (*)(size_t*, size_t*);
  for (const char* lib : {"libcudart.so", "libcudart.so.12", "libcudart.so.11.0"}) {
    void* h = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
    if (!h) h = dlopen(lib, RTLD_LAZY);
    if (!h) continue;
    auto set_device = reinterpret_cast<SetDevice>(dlsym(h, "cudaSetDevice"));
    auto get_info = reinterpret_cast<MemGetInfo>(dlsym(h, "cudaMemGetInfo"));
    size_t free_b = 0, total_b = 0;
    if (set_device && get_info && set_device(device) == 0 && get_info(&free_b, &total_b) == 0)
      return static_cast<int64_t>(free_b);
  }
  return -1;
}

}  // namespace

std::string resolve_device(const std::string& device) {
  if (device == "auto" || device.empty()) return torch::cuda::is_available() ? "cuda:0" : "cpu";
  if (device == "cpu") return device;
  std::string d = device == "cuda" ? "cuda:0" : device;
  if (!util::starts_with(d, "cuda:"))
    throw Error("device = " + device + " is not a device name (expected auto, cpu, cuda or cuda:N)");
  if (!torch::cuda::is_available())
    throw Error("device = " + device + " asks for a GPU but none is available; use device=cpu");
  const int64_t index = std::stoll(d.substr(5));
  if (index >= static_cast<int64_t>(torch::cuda::device_count()))
    throw Error("device = " + device + " but only " + std::to_string(torch::cuda::device_count()) +
                " GPU(s) are present");
  return d;
}

std::string compute_dtype_name(const TrainConfig& cfg) {
  return cfg.bf16 ? "bfloat16" : cfg.fp16 ? "float16" : "float32";
}

int64_t available_memory_bytes(const std::string& device, std::string* source) {
  if (util::starts_with(device, "cuda")) {
    const int index = device.size() > 5 ? std::stoi(device.substr(5)) : 0;
    if (source) *source = "free GPU memory";
    return cuda_free_bytes(index);
  }
  if (source) *source = "MemAvailable";
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return -1;
}

MemoryPlan plan_memory(const TrainConfig& cfg, const model::ModelConfig& mc, const std::string& device,
                       int64_t available) {
  MemoryPlan p;
  p.device = device;
  p.compute_dtype = compute_dtype_name(cfg);
  const int64_t b = dtype_bytes(p.compute_dtype);
  const torch::Dtype dtype = dtype_of(p.compute_dtype);
  const bool lora = cfg.finetuning_type != FinetuningType::full;
  const bool quantised = cfg.finetuning_type == FinetuningType::qlora;

  // Shapes only: the meta device allocates nothing.
  model::CausalLM lm = model::build_model(mc, torch::TensorOptions().dtype(dtype).device(torch::kMeta));

  peft::LoraConfig lc = lora_config_from(cfg);
  if (lora) lc = peft::resolve_target_modules(*lm, lc);

  // Linear layers by path: quantised storage and LoRA factors.
  std::map<std::string, peft::LinearImpl*> linears;
  peft::for_each_linear(*lm, [&](const std::string& path, peft::LinearImpl& lin) { linears[path] = &lin; });
  int64_t quant_bytes = 0, quant_params = 0, adapter_params = 0, lora_act_per_token = 0;
  std::map<std::string, bool> adapted;
  for (const auto& [path, lin] : linears) {
    const int64_t in = lin->options().in_features(), out = lin->options().out_features();
    if (quantised && peft::module_leaf_name(path) != "lm_head") {
      quant_params += in * out;
      quant_bytes += cfg.quantization == Quantization::int8
                         ? in * out + out * 4
                         : nf4_bytes(in * out, cfg.quant_block_size, cfg.double_quant);
    }
    if (lora && lc.targets(path)) {
      adapted[path] = true;
      const int64_t r = lc.rank_for(path);
      adapter_params += r * (in + out);
      // Per token: the fp32 copy of the input (and its dropout), A's output; an expert sees only
      // top_k / n_experts of the tokens.
      int64_t per = (b != 4 ? 4 * in : 0) + (cfg.lora_dropout > 0 ? 5 * in : 0) + 4 * r + 4 * out;
      if (path.find(".experts.") != std::string::npos && mc.n_routed_experts > 0)
        per = per * mc.num_experts_per_tok / mc.n_routed_experts;
      lora_act_per_token += per;
    }
  }

  // Dense parameters by dtype, and what trains.
  std::map<std::string, int64_t> dense_params;        // dtype name -> count
  std::map<std::string, int64_t> trainable_by_bytes;  // "4"/"2" -> count
  int64_t total = 0, trainable = 0, grad_bytes = 0, optim_bytes = 0;
  for (const auto& item : lm->named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const torch::Tensor& t = item.value();
    const std::string module = name.substr(0, name.rfind('.'));
    const bool is_quantised_weight = quantised && linears.count(module) &&
                                     peft::module_leaf_name(module) != "lm_head" &&
                                     util::ends_with(name, ".weight");
    total += t.numel();
    if (!is_quantised_weight) dense_params[p.compute_dtype] += t.numel();
    bool trains = !lora;
    if (lora) {
      const bool is_bias = util::ends_with(name, ".bias");
      if (is_bias && cfg.bias == LoraBias::all) trains = true;
      if (is_bias && cfg.bias == LoraBias::lora_only && adapted.count(module)) trains = true;
      // modules_to_save: any module on the parameter's path
      for (std::string m = module;; m = m.substr(0, m.rfind('.'))) {
        if (lc.saves(m)) trains = true;
        if (m.find('.') == std::string::npos) break;
      }
    }
    if (trains) {
      trainable += t.numel();
      grad_bytes += t.numel() * b;
      optim_bytes += t.numel() * (8 + (b != 4 ? 4 : 0));
    }
  }
  p.total_params = total + adapter_params;
  p.trainable_params = trainable + adapter_params;
  grad_bytes += adapter_params * 4;
  optim_bytes += adapter_params * 8;

  for (const auto& [name, n] : dense_params)
    if (n > 0) p.weights.push_back({"weights " + name, n * dtype_bytes(name), params_text(n)});
  if (quant_params > 0)
    p.weights.push_back(
        {std::string("weights ") + to_string(cfg.quantization) +
             (cfg.quantization == Quantization::nf4 && cfg.double_quant ? " (double quant)" : ""),
         quant_bytes, params_text(quant_params)});
  for (const auto& w : p.weights) p.weights_bytes += w.bytes;
  p.adapter_bytes = adapter_params * 4;
  p.gradient_bytes = grad_bytes;
  p.optimizer_bytes = optim_bytes;

  // Activations for one micro-batch of full length (packing fills sequences).
  const int64_t T = cfg.max_seq_length, B = cfg.per_device_train_batch_size;
  const int64_t tokens = B * T;
  p.tokens_per_micro_batch = tokens;
  const int64_t L = mc.num_hidden_layers;
  int64_t sum_layers = 0, max_layer = 0;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t a = layer_activation_per_token(mc, l, b, T) + lora_act_per_token / std::max<int64_t>(L, 1);
    sum_layers += a;
    max_layer = std::max(max_layer, a);
  }
  const int64_t H = mc.hidden_size;
  const int64_t shared = tokens * (2 * b * H + 2 * (4 * H)) + B * T * T * 2;  // embeddings, final norm, masks
  const int64_t loss_chunk = std::min<int64_t>(tokens, kLossChunkTokens);
  const int64_t logits = loss_chunk * mc.vocab_size * 4 * 3;  // fp32 logits, log-softmax, gradient
  // Backward holds about one layer's activation gradients at a time on top of what is saved.
  p.activation_bytes_full = tokens * (sum_layers + max_layer) + shared + logits;
  p.activation_bytes_checkpointed = tokens * (L * b * H + 2 * max_layer) + shared + logits;
  p.activation_bytes = cfg.gradient_checkpointing ? p.activation_bytes_checkpointed : p.activation_bytes_full;
  p.overhead_bytes = int64_t{512} << 20;

  const int64_t steady = p.weights_bytes + p.adapter_bytes + p.gradient_bytes + p.optimizer_bytes +
                         p.activation_bytes + p.overhead_bytes;
  // Quantised bases are loaded dense in the compute dtype first, then quantised layer by layer.
  p.load_peak_bytes = quantised ? (total * b + p.overhead_bytes) : 0;
  p.total_bytes = std::max(steady, p.load_peak_bytes);

  std::string source;
  p.available_bytes = available >= 0 ? available : available_memory_bytes(device, &source);
  p.available_source = available >= 0 ? "given" : source;
  return p;
}

std::string format_memory_plan(const MemoryPlan& p) {
  std::ostringstream s;
  auto row = [&](const std::string& what, int64_t bytes, const std::string& detail) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "  %-34s %12s  %s\n", what.c_str(),
                  util::format_bytes(static_cast<double>(bytes)).c_str(), detail.c_str());
    s << buf;
  };
  s << "memory plan on " << p.device << " (compute " << p.compute_dtype << ", " << params_text(p.total_params)
    << ", " << params_text(p.trainable_params, "trainable") << "):\n";
  for (const auto& w : p.weights) row(w.what, w.bytes, w.detail);
  if (p.adapter_bytes > 0) row("LoRA adapters (float32)", p.adapter_bytes, "");
  row("gradients", p.gradient_bytes, "");
  row("optimizer states (AdamW)", p.optimizer_bytes, "exp_avg, exp_avg_sq, fp32 master copies");
  const std::string per_batch = std::to_string(p.tokens_per_micro_batch) + " tokens per micro-batch";
  row(std::string("activations") +
          (p.activation_bytes == p.activation_bytes_checkpointed ? " (checkpointed)" : ""),
      p.activation_bytes, per_batch);
  row("  without gradient checkpointing", p.activation_bytes_full, "");
  row("  with gradient checkpointing", p.activation_bytes_checkpointed, "");
  row("runtime and allocator slack", p.overhead_bytes, "");
  if (p.load_peak_bytes > 0) row("dense load before quantising", p.load_peak_bytes, "the peak while loading");
  row("total", p.total_bytes, "");
  if (p.available_bytes >= 0)
    row("available", p.available_bytes, p.available_source);
  else
    s << "  available: unknown (not checked)\n";
  s << (p.fits() ? "  fits\n" : "  does NOT fit\n");
  return s.str();
}

}  // namespace dsft::train
