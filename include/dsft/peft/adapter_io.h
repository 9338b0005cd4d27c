// PEFT-format LoRA adapters: adapter_config.json + adapter_model.safetensors, readable by
// HF PEFT (PeftModel.from_pretrained) and written from / loaded into a dsft module tree.
//
// Tensor keys are "base_model.model.<module path>.lora_A.weight" [r, in] and
// ".lora_B.weight" [out, r] (PEFT leaves the adapter name "default" out of saved keys); modules in
// modules_to_save are saved in full as "base_model.model.<module path>.<param>". Module paths are
// relative to `root`, which must be the module whose parameter names are the HF checkpoint keys.
#pragma once
#include <torch/nn/module.h>

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "dsft/peft/lora_config.h"

namespace dsft::peft {

// The PEFT release whose adapter format these files follow (written as peft_version).
inline constexpr const char* kPeftFormatVersion = "0.13.2";

nlohmann::json adapter_config_to_json(const LoraConfig& config, const std::string& base_model_name_or_path);
// Reads PEFT's adapter_config.json fields; `source` names the file in errors. Throws dsft::Error
// for another peft_type and for options dsft does not implement (fan_in_fan_out, DoRA,
// layers_to_transform, ...), rather than loading something that would compute another function.
LoraConfig adapter_config_from_json(const nlohmann::json& json, const std::string& source);

struct AdapterInfo {
  LoraConfig config;
  std::string base_model_name_or_path;
  std::vector<std::string> modules;  // paths of the layers that got adapter weights
};

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (mode 0600, each atomically;
// dir is created 0700). The weights are saved in the dtype the adapter holds them.
void save_adapter(torch::nn::Module& root, const LoraConfig& config, const std::string& dir,
                  const std::string& base_model_name_or_path);

// Loads an adapter saved by save_adapter or by PEFT: adds adapters (as the config says) to the
// layers named in the file and copies the weights in. Every key, module and shape is checked
// before anything changes; a mismatch (another base model, a missing module, a wrong shape, an
// incomplete file) throws dsft::Error and leaves the model untouched.
AdapterInfo load_adapter(torch::nn::Module& root, const std::string& dir);

// Reads only dir/adapter_config.json.
AdapterInfo read_adapter_config(const std::string& dir);

}  // namespace dsft::peft
