// What `dsft forward` and `dsft init` call: whole operations on model directories.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsft/model/config.h"

namespace dsft::model {

struct ForwardRequest {
  std::string model_dir;
  std::string input;   // safetensors with input_ids I64 [B, T]
  std::string output;  // safetensors written with logits F32 [B, T, V]
  std::string dtype = "float32";
  std::string device = "cpu";
};
// Loads the model, runs one forward pass and writes the logits. Returns the logits' shape.
std::vector<int64_t> run_forward(const ForwardRequest& request);

struct InitRequest {
  std::string arch;             // llama | qwen2 | deepseek_v2 | deepseek_v3
  std::string preset = "tiny";  // a built-in preset name, or a path to a config.json-style file
  std::string output_dir;
  uint64_t seed = 0;
  std::string dtype = "bfloat16";
  std::vector<std::string> overrides;  // key=value, applied to the preset before parsing
  bool force = false;                  // allow a non-empty output directory
  // Writes tokenizer files into the new model directory (given the final config); unset: the
  // model is written without a tokenizer.
  std::function<void(const std::string& dir, const ModelConfig& config)> write_tokenizer;
};
// Writes a randomly initialised model in HF format (config.json, model.safetensors,
// generation_config.json). Returns its config.
ModelConfig run_init(const InitRequest& request);

// Built-in presets compiled from configs/presets/<arch>-<preset>.json: name -> JSON text.
const std::vector<std::pair<std::string, std::string>>& builtin_presets();
// The preset names available for `arch` ("tiny", "small", ...).
std::vector<std::string> preset_names(const std::string& arch);

}  // namespace dsft::model
