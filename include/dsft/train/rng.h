// Snapshots of torch's global random generators (the CPU one and each CUDA device's), as bytes for
// checkpoints and as tensors for recomputation in gradient checkpointing.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dsft::train {

struct RngSnapshot {
  std::vector<uint8_t> cpu;                // at::Generator::get_state() of the default CPU generator
  std::vector<std::vector<uint8_t>> cuda;  // one per CUDA device, in device order (empty without CUDA)
};

// Captures the CPU generator and, when CUDA is available, every device's generator.
RngSnapshot capture_rng();
// Restores a snapshot. Throws dsft::Error when it holds CUDA states for more devices than exist
// (a checkpoint from a bigger machine); fewer is fine (extra devices keep their state).
void restore_rng(const RngSnapshot& snapshot);

// State tensors of single generators, for code that forks the RNG around a computation.
torch::Tensor get_rng_state(const torch::Device& device);
void set_rng_state(const torch::Device& device, const torch::Tensor& state);

// Base64 for putting snapshots into JSON (trainer_state.json).
std::string base64_encode(const std::vector<uint8_t>& bytes);
std::vector<uint8_t> base64_decode(const std::string& text);  // throws dsft::Error on bad input

}  // namespace dsft::train
