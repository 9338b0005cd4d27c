// Applying LoRA to a whole module tree: find the dsft::peft::Linear layers by PEFT's target rules,
// add adapters in place, quantise bases, and decide which parameters train.
//
// Adapters are added to the Linear objects the model already holds (no module replacement): a
// libtorch parent keeps calling the C++ member it was built with, so swapping a registered child
// would change the state dict but not the forward pass. Models therefore build their projections
// as dsft::peft::Linear from the start.
#pragma once
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsft/peft/lora_config.h"
#include "dsft/peft/lora_linear.h"

namespace dsft::peft {

// Calls fn(path, layer) for every dsft::peft::Linear under root (root itself has path ""), in
// registration order. Paths are dotted, relative to root: "model.layers.0.self_attn.q_proj".
void for_each_linear(torch::nn::Module& root, const std::function<void(const std::string&, LinearImpl&)>& fn);

// The adapter options PEFT would give the module at `path` under `config`.
LoraOptions lora_options_for(const LoraConfig& config, const std::string& path);

// Expands target_modules = all-linear as PEFT does: the set of leaf names of every linear layer
// except lm_head. Other configs come back unchanged.
LoraConfig resolve_target_modules(torch::nn::Module& root, const LoraConfig& config);

struct InjectionResult {
  LoraConfig config;                 // with all-linear expanded
  std::vector<std::string> adapted;  // paths of the layers that got an adapter
};

// Adds an adapter to every targeted layer and freezes everything else
// (mark_only_lora_as_trainable). Throws dsft::Error, changing nothing, when the config is invalid,
// when nothing matches, or when a targeted module is not a dsft::peft::Linear.
InjectionResult inject_lora(torch::nn::Module& root, const LoraConfig& config);

// Trainable: lora_A / lora_B; biases as config.bias says (all: every bias in the model;
// lora_only: biases of adapted layers); every parameter of modules_to_save. Everything else frozen.
void mark_only_lora_as_trainable(torch::nn::Module& root, const LoraConfig& config);

// Switches every adapter under root on or off (off: the base model's outputs exactly).
void set_adapters_enabled(torch::nn::Module& root, bool enabled);

// Merges every adapter into its base weight (merge_and_unload on each adapted layer).
void merge_adapters(torch::nn::Module& root);

struct ParameterCount {
  int64_t trainable = 0;
  int64_t total = 0;  // quantised base weights count by their element count
};
ParameterCount count_parameters(torch::nn::Module& root);

// Quantises the base weight of every dense dsft::peft::Linear whose leaf name is not in `skip`;
// returns the paths quantised.
std::vector<std::string> quantize_linears(torch::nn::Module& root, BaseFormat format,
                                          const Nf4Options& nf4 = {},
                                          const std::vector<std::string>& skip = {"lm_head"});

}  // namespace dsft::peft
