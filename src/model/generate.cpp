// Generation loop: one prefill forward over the prompt fills the KV cache, then each step feeds
// only the newest token. Token choice runs on the CPU with a CPU generator so that a seed gives
// the same tokens whatever device the model is on.
#include "dsft/model/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "dsft/model/causal_lm.h"
#include "dsft/util/error.h"

namespace dsft::model {
namespace {

void check_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 0)
    throw Error("max_new_tokens must be 0 or more, got " + std::to_string(o.max_new_tokens));
  if (!(o.temperature >= 0.0) || !std::isfinite(o.temperature))
    throw Error("temperature must be 0 (greedy) or a positive number, got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw Error("top_k must be 0 (no limit) or more, got " + std::to_string(o.top_k));
  if (!(o.top_p > 0.0 && o.top_p <= 1.0))
    throw Error("top_p must be in (0, 1], got " + std::to_string(o.top_p));
}

// logits: fp32 [vocab] on the CPU.
int64_t choose_token(const torch::Tensor& logits, const GenerateOptions& o, at::Generator& generator) {
  if (o.temperature == 0.0) return logits.argmax().item<int64_t>();
  auto scaled = logits / o.temperature;
  const int64_t vocab = scaled.size(0);
  // Sorted once, most likely first; top-k and top-p then cut a prefix of this order.
  auto [sorted, order] = scaled.sort(/*dim=*/0, /*descending=*/true);
  int64_t keep = vocab;
  if (o.top_k > 0) keep = std::min(keep, o.top_k);
  auto probs = torch::softmax(sorted.narrow(0, 0, keep), 0);
  if (o.top_p < 1.0) {
    // Keep a token while the probability of the tokens before it is still below top_p: the
    // smallest prefix reaching top_p, and always the most likely token.
    auto before = probs.cumsum(0) - probs;
    const int64_t n = (before < o.top_p).sum().item<int64_t>();
    keep = std::max<int64_t>(1, n);
    probs = probs.narrow(0, 0, keep);
  }
  auto pick = torch::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
  return order[pick].item<int64_t>();
}

}  // namespace

std::vector<int64_t> generate(CausalLMImpl& model, const std::vector<int64_t>& prompt_ids,
                              const GenerateOptions& options, const std::function<void(int64_t)>& on_token) {
  check_options(options);
  if (prompt_ids.empty()) throw Error("the prompt is empty: generation needs at least one token to start from");
  const int64_t vocab = model.config().vocab_size;
  for (int64_t id : prompt_ids)
    if (id < 0 || id >= vocab)
      throw Error("prompt token id " + std::to_string(id) + " is outside the model's vocabulary (vocab_size " +
                  std::to_string(vocab) + "); does the tokenizer belong to this model?");

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const auto params = model.parameters();
  const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().device();
  at::Generator generator = at::detail::createCPUGenerator(options.seed);

  std::vector<int64_t> out;
  if (options.max_new_tokens > 0) {
    KvCache cache = model.make_cache();
    ForwardOptions fo;
    fo.cache = &cache;
    auto input = torch::tensor(prompt_ids, torch::kInt64).unsqueeze(0).to(device);
    for (int64_t step = 0; step < options.max_new_tokens; ++step) {
      auto logits = model.forward(input, fo);  // [1, T, vocab]
      auto last = logits.select(1, logits.size(1) - 1).squeeze(0).to(torch::kCPU, torch::kFloat32);
      const int64_t token = choose_token(last, options, generator);
      if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) != options.stop_ids.end()) break;
      out.push_back(token);
      if (on_token) on_token(token);
      input = torch::full({1, 1}, token, torch::TensorOptions().dtype(torch::kInt64).device(device));
    }
  }
  if (was_training) model.train();
  return out;
}

}  // namespace dsft::model
