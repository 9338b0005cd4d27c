// The memory plan of a training run, computed from config.json and the training config alone
// (the model is built on torch's meta device: shapes, no storage, nothing loaded): weights by
// dtype and quantisation, adapters, gradients, optimizer states, activations with and without
// gradient checkpointing, and what the device has free. `dsft train --dry-run` prints it; every
// run checks it before loading anything and refuses one that cannot fit.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsft/model/config.h"
#include "dsft/train/config.h"

namespace dsft::train {

struct MemoryLine {
  std::string what;  // "weights bfloat16", "LoRA adapters", ...
  int64_t bytes = 0;
  std::string detail;  // "6.7B parameters", ...
};

struct MemoryPlan {
  std::string device;         // resolved: "cpu", "cuda:0"
  std::string compute_dtype;  // "float32", "bfloat16", "float16"
  int64_t total_params = 0;   // every parameter of the model (quantised ones by element count)
  int64_t trainable_params = 0;
  int64_t tokens_per_micro_batch = 0;  // per_device_train_batch_size * max_seq_length

  std::vector<MemoryLine> weights;  // one line per storage kind (dense dtype, nf4, int8)
  int64_t weights_bytes = 0;
  int64_t adapter_bytes = 0;          // LoRA factors (fp32)
  int64_t gradient_bytes = 0;         // one gradient per trainable parameter, in its dtype
  int64_t optimizer_bytes = 0;        // AdamW: exp_avg + exp_avg_sq (+ fp32 master for bf16/fp16 params)
  int64_t activation_bytes_full = 0;  // every layer's activations kept for backward
  int64_t activation_bytes_checkpointed = 0;  // layer inputs kept, one layer recomputed at a time
  int64_t activation_bytes = 0;               // the one this run uses
  int64_t overhead_bytes = 0;                 // runtime, allocator slack, data
  int64_t load_peak_bytes = 0;                // dense weights while loading before quantisation
  int64_t total_bytes = 0;                    // max(steady state, load peak)

  int64_t available_bytes = -1;  // -1: unknown (then nothing is refused)
  std::string available_source;  // "MemAvailable", "free GPU memory"

  bool fits() const { return available_bytes < 0 || total_bytes <= available_bytes; }
};

// "auto" -> "cuda:0" when a GPU is present, else "cpu"; other names are checked and returned.
std::string resolve_device(const std::string& device);

// The compute dtype name a config asks for ("bfloat16" with bf16, "float16" with fp16, else
// "float32").
std::string compute_dtype_name(const TrainConfig& cfg);

// Plans `cfg` for the model `model` on `device` (a resolved name). `available_bytes` < 0 asks the
// system (available_memory_bytes); tests pass a number.
MemoryPlan plan_memory(const TrainConfig& cfg, const model::ModelConfig& model, const std::string& device,
                       int64_t available_bytes = -1);

// Free memory of a device: MemAvailable from /proc/meminfo for "cpu", the CUDA driver's free
// memory for "cuda:N". -1 when it cannot be known. `source` receives what was read.
int64_t available_memory_bytes(const std::string& device, std::string* source = nullptr);

// The plan as an aligned table for people, ending with the verdict.
std::string format_memory_plan(const MemoryPlan& plan);

}  // namespace dsft::train
