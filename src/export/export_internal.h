// Shared between the export formats (src/export/{export,hf_export,peft_export}.cpp): the checked
// inputs of one export and the writers that fill a private staging directory. Torch-free.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dsft/io/safetensors.h"
#include "dsft/model/config.h"

namespace dsft::exporter::detail {

// A base model (and adapter) that have been checked against each other: the checkpoint matches
// config.json tensor by tensor, and every adapter weight names a linear layer of this model with
// the shapes it needs (the same checks `dsft generate --adapter` makes, run on a model built on
// the meta device, so nothing is allocated).
struct CheckedInputs {
  std::string model_dir;
  model::ModelConfig config;
  std::shared_ptr<io::Checkpoint> checkpoint;
  std::string adapter_dir;              // resolved; "" = none
  std::string base_model_name_or_path;  // as the adapter's config says
  std::vector<std::string> adapted;     // layers with LoRA weights
  std::string run_dir;                  // the training run around the adapter; "" = unknown
  std::string chat_template;            // a named template the run trained with; "" = model's own
  std::vector<std::string> warnings;
};

// Checks the model directory (config.json, weights) and, when adapter_dir is given, the adapter.
CheckedInputs check_inputs(const std::string& model_dir, const std::string& adapter_dir);

// The tokenizer files of a model directory that an export carries along (those that exist).
std::vector<std::string> tokenizer_files(const std::string& model_dir);
// Throws dsft::Error when the model directory has neither tokenizer.json nor tokenizer.model.
void require_tokenizer(const std::string& model_dir);

struct HfWriteOptions {
  size_t max_shard_bytes = 0;
  std::string dtype;  // "" = each tensor keeps its checkpoint dtype
};
struct HfWriteResult {
  size_t shards = 0;
  std::string dtype;
  int64_t merged_layers = 0;
  std::vector<std::string> warnings;
};
// Writes the merged HF checkpoint into `dir` (existing, empty).
HfWriteResult write_hf(const CheckedInputs& in, const HfWriteOptions& options, const std::string& dir);

// Writes the adapter (as PEFT files) and its model card into `dir` (existing, empty).
void write_peft(const CheckedInputs& in, const std::string& dir);

// The chat template a run was trained with when config.yaml names one ("" otherwise).
std::string run_chat_template(const std::string& run_dir);

// Copies `from` to `to` (mode 0600, atomically, synced).
void copy_private(const std::string& from, const std::string& to);

}  // namespace dsft::exporter::detail
