// Helpers of the merged / PEFT export tests: tiny random models from the built-in presets (with a
// synthetic byte-level BPE tokenizer), LoRA adapters with non-zero random factors on chosen
// layers, and logits of base + adapter or of a plain checkpoint.
#pragma once
#include <sys/stat.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "dsft/model/commands.h"
#include "dsft/model/load.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/peft/inject.h"
#include "export/export_util.h"

namespace dsft::exporter::test {

// A tiny random model of `arch` in `dtype` with a tokenizer, written to tmp/name.
inline std::string make_model(const TempDir& tmp, const std::string& name, const std::string& arch,
                              const std::string& dtype = "float32", std::vector<std::string> overrides = {},
                              uint64_t seed = 1) {
  model::InitRequest r;
  r.arch = arch;
  r.preset = "tiny";
  r.output_dir = tmp.path(name);
  r.seed = seed;
  r.dtype = dtype;
  r.overrides = std::move(overrides);
  r.write_tokenizer = [](const std::string& dir, const model::ModelConfig& c) {
    write_synthetic_tokenizer(dir, c.vocab_size, c.bos_token_id.value_or(0),
                              c.eos_token_ids.empty() ? 1 : c.eos_token_ids[0]);
  };
  model::run_init(r);
  return r.output_dir;
}

// A LoRA adapter on `targets` of the model in model_dir, with random (non-zero) A and B so that
// it changes the outputs, saved in PEFT format to adapter_dir. Returns the adapted layer paths.
inline std::vector<std::string> make_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                             const std::vector<std::string>& targets, int64_t r = 4,
                                             double alpha = 8.0, uint64_t seed = 7,
                                             const std::string& base_name = "") {
  torch::manual_seed(seed);
  auto lm = model::load_model(model_dir);
  peft::LoraConfig cfg;
  cfg.r = r;
  cfg.lora_alpha = alpha;
  cfg.target_modules = targets;
  const auto injected = peft::inject_lora(*lm, cfg);
  torch::NoGradGuard no_grad;
  for (auto& p : lm->named_parameters())
    if (p.key().find("lora_") != std::string::npos) p.value().normal_(0.0, 0.2);
  peft::save_adapter(*lm, injected.config, adapter_dir, base_name.empty() ? model_dir : base_name);
  return injected.adapted;
}

inline torch::Tensor test_ids(int64_t vocab) {
  torch::manual_seed(3);
  return torch::randint(0, vocab, {2, 9}, torch::kLong);
}

// fp32 logits of a checkpoint (plus an adapter when given) on test_ids.
inline torch::Tensor logits_of(const std::string& model_dir, const std::string& adapter_dir = "") {
  auto lm = model::load_model(model_dir);
  if (!adapter_dir.empty()) peft::load_adapter(*lm, adapter_dir);
  lm->eval();
  torch::NoGradGuard no_grad;
  return lm->forward(test_ids(lm->config().vocab_size));
}

// max |a - b| / max |b|
inline double max_rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

inline unsigned mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

// Entries of `dir` whose names start with `prefix` (leftover staging folders).
inline std::vector<std::string> entries_starting(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().filename().string());
  return out;
}

}  // namespace dsft::exporter::test
