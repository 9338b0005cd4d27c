// Internal to the GGUF export: one planned output tensor (its llama.cpp name, the checkpoint
// tensors it is made from with the shapes config.json implies, and the layout change), shared by
// the model and the LoRA adapter exports.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dsft/export/gguf_export.h"
#include "dsft/io/gguf.h"
#include "dsft/io/safetensors.h"
#include "dsft/model/config.h"

namespace dsft::exporter::detail {

struct PlanItem {
  std::string gguf_name;
  std::vector<std::string> sources;                 // checkpoint tensor names
  std::vector<std::vector<int64_t>> source_shapes;  // what config.json implies for each
  std::vector<int64_t> out_shape;                   // torch order (outermost first)
  // sources (as float32) -> the output tensor; null: the single source unchanged.
  std::function<torch::Tensor(const std::vector<torch::Tensor>&)> transform;
  bool force_f32 = false;
  int64_t unpermute_heads = 0;  // > 0: rows un-permuted for llama.cpp's rope (a LoRA B must follow)
};

// The tensors of a model of `config` in llama.cpp's layout (the family's GGUF architecture).
std::vector<PlanItem> plan_model(const model::ModelConfig& config);

std::string shape_str(const std::vector<int64_t>& s);
io::GgmlType choose_type(GgufOutType out, const std::vector<int64_t>& torch_shape, bool force_f32);
std::vector<uint8_t> encode(const torch::Tensor& t, io::GgmlType type);
torch::Tensor unpermute_rope(const torch::Tensor& w, int64_t n_head);
// Throws naming the first missing tensor or the first shape that differs from the plan.
void check_sources(const io::Checkpoint& ckpt, const std::vector<PlanItem>& plan, const std::string& where);
// Refuses an existing file (unless overwrite), a directory, or a missing parent directory.
void check_output(const std::string& path, bool overwrite);
// Adds the tensor to the writer; its data is read, transformed and encoded when the file is written.
void add_planned(io::GgufWriter& w, const std::shared_ptr<io::Checkpoint>& ckpt, PlanItem item, GgufOutType out);

}  // namespace dsft::exporter::detail
