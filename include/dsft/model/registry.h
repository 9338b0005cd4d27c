// The family registry: one row per model_type with its builder, its HF architecture name, the HF
// tensor-name table ({layer} / {expert} placeholders) and notes. Adding a family = adding a row
// and a src/model/<family>.cpp (docs/HOWTO-add-model.md).
#pragma once
#include <string>
#include <vector>

#include "dsft/model/causal_lm.h"
#include "dsft/model/config.h"

namespace dsft::model {

struct Family {
  std::string name;             // the config's model_type
  std::string hf_architecture;  // config.json "architectures" entry
  CausalLM (*build)(const ModelConfig& config, const BuildOptions& tensor_options);
  // Every tensor name a checkpoint of this family may hold; which ones a given model has depends
  // on its config (biases, q-LoRA, dense vs MoE layers, tied embeddings).
  std::vector<std::string> tensor_names;
  std::string notes;  // checkpoints that use it, and what is special
};

const std::vector<Family>& families();
// Throws dsft::Error listing the supported families when `model_type` is not one of them.
const Family& find_family(const std::string& model_type);

// Builds the model described by `config` with uninitialised parameters of the given dtype/device.
CausalLM build_model(const ModelConfig& config, const BuildOptions& tensor_options = {});

// True when `name` matches one of `family`'s tensor-name patterns.
bool matches_tensor_table(const Family& family, const std::string& name);

// The builders (one file each).
CausalLM build_llama(const ModelConfig& config, const BuildOptions& tensor_options);
CausalLM build_qwen2(const ModelConfig& config, const BuildOptions& tensor_options);
CausalLM build_deepseek(const ModelConfig& config, const BuildOptions& tensor_options);

}  // namespace dsft::model
