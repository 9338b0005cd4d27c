// Autoregressive text generation with the KV cache: prefill the prompt once, then one token per
// step; greedy (argmax) or sampling (temperature, then top-k, then top-p) from a seeded generator.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace dsft::model {

class CausalLMImpl;

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // 0: greedy (argmax); > 0: sample from softmax(logits / temperature)
  int64_t top_k = 0;         // 0: no limit; else keep the k most likely tokens
  double top_p = 1.0;        // nucleus: the smallest set whose probability reaches top_p (>= 1 token)
  uint64_t seed = 0;         // sampling is deterministic for a given seed
  // Generation ends when one of these is produced (it is not part of the result).
  std::vector<int64_t> stop_ids;
};

// Generates up to max_new_tokens after `prompt_ids` (non-empty) and returns the new tokens
// without the stop token. `on_token` is called with each new token as soon as it is chosen.
// Throws dsft::Error for an empty prompt, ids outside the vocabulary or invalid options.
std::vector<int64_t> generate(CausalLMImpl& model, const std::vector<int64_t>& prompt_ids,
                              const GenerateOptions& options,
                              const std::function<void(int64_t)>& on_token = {});

}  // namespace dsft::model
