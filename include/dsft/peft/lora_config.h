// LoraConfig: the PEFT LoraConfig fields dsft uses, with PEFT's rules for which modules they select
// and which rank and alpha each module gets. Torch-free.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsft::peft {

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  // Module names ("q_proj") or dotted paths; a module is targeted when its path equals an entry
  // or ends with "." + entry. {"all-linear"} targets every linear layer except lm_head.
  std::vector<std::string> target_modules;
  // PEFT's target_modules given as one string: a regex that must match the whole module path.
  // When set, target_modules is ignored.
  std::string target_modules_regex;
  std::string bias = "none";  // none | all | lora_only: which biases train
  bool use_rslora = false;    // scale alpha / sqrt(r) instead of alpha / r
  // Modules trained in full and saved with the adapter (e.g. lm_head, embed_tokens).
  std::vector<std::string> modules_to_save;
  // Per-module overrides: key k applies to a module whose path matches "(.*\.)?(k)".
  std::map<std::string, int64_t> rank_pattern;
  std::map<std::string, double> alpha_pattern;

  // Throws dsft::Error naming the first bad field.
  void validate() const;
  bool is_all_linear() const;
  // PEFT's check_target_module_exists (all-linear must be resolved first: see inject.h).
  bool targets(const std::string& module_path) const;
  bool saves(const std::string& module_path) const;  // in modules_to_save
  int64_t rank_for(const std::string& module_path) const;
  double alpha_for(const std::string& module_path) const;
  double scale_for(const std::string& module_path) const;
};

// True when `path` equals `name` or ends with "." + name.
bool module_path_matches(const std::string& path, const std::string& name);

// The last dotted segment of a module path ("model.layers.0.self_attn.q_proj" -> "q_proj").
std::string module_leaf_name(const std::string& path);

}  // namespace dsft::peft
