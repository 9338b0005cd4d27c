// Loading and saving whole models in HF format: config.json + safetensors (single or sharded).
// Weights go from the mapped checkpoint straight into parameters built in the target dtype and
// device (one copy); every checkpoint key must be consumed and every parameter filled.
#pragma once
#include <torch/torch.h>

#include <string>

#include "dsft/io/safetensors.h"
#include "dsft/model/causal_lm.h"

namespace dsft::model {

struct LoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // parameter / compute dtype
  torch::Device device = torch::kCPU;
};

// Builds the model of DIR/config.json and fills it from DIR's safetensors.
CausalLM load_model(const std::string& dir, const LoadOptions& options = {});

// Copies every tensor of `checkpoint` into `model`. Skipped on purpose: DeepSeek-V3's MTP layers
// (model.layers.{N..N+num_nextn_predict_layers-1}.*), lm_head.weight of tied models, and the
// rotary_emb.inv_freq buffers older llama checkpoints carry. Anything else unmatched, and any
// parameter the checkpoint lacks, is an error naming the keys.
void load_weights(CausalLMImpl& model, const io::Checkpoint& checkpoint);

struct SaveOptions {
  std::optional<torch::Dtype> dtype;  // default: each tensor's own dtype
  size_t max_shard_bytes = 0;         // 0: one model.safetensors; else sharded with an index
  bool write_generation_config = true;
};

// Writes DIR/config.json (torch_dtype updated), the weights, and generation_config.json.
// Parameters attached by adapters (keys outside the family's tensor table) are refused: merge or
// save the adapter separately.
void save_model(CausalLMImpl& model, const std::string& dir, const SaveOptions& options = {});

// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16" -> dtype; anything else is a dsft::Error.
torch::Dtype parse_torch_dtype(const std::string& name);
std::string torch_dtype_name(torch::Dtype dtype);  // HF spelling: "float32", "bfloat16", ...

// A non-owning tensor over a mapped view (valid while the file/checkpoint lives).
torch::Tensor tensor_from_view(const io::TensorView& view);
torch::Dtype to_torch_dtype(io::DType dtype);  // throws for types without a torch equivalent
io::DType to_io_dtype(torch::Dtype dtype);

}  // namespace dsft::model
