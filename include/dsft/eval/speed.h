// Inference speed of a loaded model: prefill tokens/s (one forward over each prompt), time to the
// first generated token, decode tokens/s (greedy, KV cache, a fixed number of new tokens), and the
// process's peak memory (CPU: VmHWM; CUDA: device memory in use, sampled after each run).
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace dsft::model {
class CausalLMImpl;
}

namespace dsft::eval {

struct SpeedResult {
  int64_t prompts = 0;
  int64_t prompt_tokens = 0;  // prefilled, over all prompts
  int64_t new_tokens = 0;     // generated, over all prompts
  double prefill_tokens_per_s = 0.0;
  double decode_tokens_per_s = 0.0;     // tokens after the first / time after the first
  double time_to_first_token_ms = 0.0;  // mean over prompts
  int64_t peak_memory_bytes = 0;
  std::string peak_memory_source;  // "VmHWM" or "cuda device memory in use"
  std::string device;
};

// Runs each prompt once (after one untimed warm-up) and generates exactly `new_tokens` tokens
// (no stop tokens, so every run decodes the same length). `new_tokens` >= 1.
SpeedResult measure_speed(model::CausalLMImpl& model, const std::vector<std::vector<int64_t>>& prompts,
                          int64_t new_tokens, const c10::Device& device);

// Peak memory so far: VmHWM of this process on the CPU, device memory in use on CUDA.
int64_t peak_memory_bytes(const c10::Device& device, std::string* source = nullptr);

// The report's "speed" section.
nlohmann::json to_json(const SpeedResult& speed);

}  // namespace dsft::eval
