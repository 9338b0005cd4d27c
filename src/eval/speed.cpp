// Speed: timed prefill forwards and timed greedy generation on the loaded model; peak memory from
// /proc/self/status or, on CUDA, the driver (through the runtime libtorch loaded, no link-time
// CUDA dependency).
#include "dsft/eval/speed.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "dsft/model/causal_lm.h"
#include "dsft/model/generate.h"
#include "dsft/train/metrics.h"
#include "dsft/util/error.h"

namespace dsft::eval {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Device memory in use (total - free) on CUDA device `index`; -1 when it cannot be read.
int64_t cuda_used_bytes(int index) {
  using SetDevice = int (*)(int);
  using MemGetInfo = int (*)(size_t*, size_t*);
  for (const char* lib : {"libcudart.so", "libcudart.so.12", "libcudart.so.11.0"}) {
    void* h = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
    if (!h) continue;  // only a runtime libtorch already loaded
    auto set_device = reinterpret_cast<SetDevice>(dlsym(h, "cudaSetDevice"));
    auto get_info = reinterpret_cast<MemGetInfo>(dlsym(h, "cudaMemGetInfo"));
    size_t free_b = 0, total_b = 0;
    if (set_device && get_info && set_device(index) == 0 && get_info(&free_b, &total_b) == 0)
      return static_cast<int64_t>(total_b - free_b);
  }
  return -1;
}

int64_t g_cuda_peak = 0;

void sample_memory(const c10::Device& device) {
  if (!device.is_cuda()) return;
  g_cuda_peak = std::max(g_cuda_peak, cuda_used_bytes(device.has_index() ? device.index() : 0));
}

}  // namespace

int64_t peak_memory_bytes(const c10::Device& device, std::string* source) {
  if (device.is_cuda()) {
    sample_memory(device);
    if (g_cuda_peak > 0) {
      if (source) *source = "cuda device memory in use";
      return g_cuda_peak;
    }
  }
  if (source) *source = "VmHWM";
  return train::peak_rss_bytes();
}

SpeedResult measure_speed(model::CausalLMImpl& m, const std::vector<std::vector<int64_t>>& prompts,
                          int64_t new_tokens, const c10::Device& device) {
  if (new_tokens < 1) throw UsageError("--speed-tokens must be at least 1 to measure decoding");
  if (prompts.empty()) throw Error("no prompt to measure speed with");
  SpeedResult r;
  r.device = device.str();
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard no_grad;
  model::GenerateOptions go;
  go.max_new_tokens = new_tokens;  // no stop ids: every run decodes the same number of tokens

  // Warm-up (allocator, kernels, thread pools), untimed.
  model::generate(m, prompts.front(), [&] {
    model::GenerateOptions w = go;
    w.max_new_tokens = std::min<int64_t>(2, new_tokens);
    return w;
  }());

  double prefill_s = 0.0, ttft_s = 0.0, decode_s = 0.0;
  int64_t decode_tokens = 0;
  for (const auto& prompt : prompts) {
    const auto ids = torch::tensor(prompt, torch::kInt64).unsqueeze(0).to(device);
    const auto t0 = Clock::now();
    auto logits = m.forward(ids);
    (void)logits.select(1, -1).argmax(-1).item<int64_t>();  // waits for the device
    prefill_s += seconds(Clock::now() - t0);
    r.prompt_tokens += static_cast<int64_t>(prompt.size());
    logits = torch::Tensor();

    Clock::time_point first;
    int64_t count = 0;
    const auto g0 = Clock::now();
    const auto out = model::generate(m, prompt, go, [&](int64_t) {
      if (count++ == 0) first = Clock::now();
    });
    const auto g1 = Clock::now();
    if (!out.empty()) {
      ttft_s += seconds(first - g0);
      decode_s += seconds(g1 - first);
      decode_tokens += static_cast<int64_t>(out.size()) - 1;
    }
    r.new_tokens += static_cast<int64_t>(out.size());
    ++r.prompts;
    sample_memory(device);
  }
  if (was_training) m.train();
  r.prefill_tokens_per_s = prefill_s > 0 ? static_cast<double>(r.prompt_tokens) / prefill_s : 0.0;
  r.decode_tokens_per_s = decode_s > 0 ? static_cast<double>(decode_tokens) / decode_s : 0.0;
  r.time_to_first_token_ms = r.prompts > 0 ? 1000.0 * ttft_s / static_cast<double>(r.prompts) : 0.0;
  r.peak_memory_bytes = peak_memory_bytes(device, &r.peak_memory_source);
  return r;
}

nlohmann::json to_json(const SpeedResult& s) {
  return {{"prefill_tokens_per_s", s.prefill_tokens_per_s},
          {"decode_tokens_per_s", s.decode_tokens_per_s},
          {"time_to_first_token_ms", s.time_to_first_token_ms},
          {"peak_memory_bytes", s.peak_memory_bytes},
          {"peak_memory_source", s.peak_memory_source},
          {"prompts", s.prompts},
          {"prompt_tokens", s.prompt_tokens},
          {"new_tokens", s.new_tokens},
          {"device", s.device}};
}

}  // namespace dsft::eval
