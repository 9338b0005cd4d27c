// Perplexity on held-out records through the training data path (same template, masking and
// BOS handling as dsft train): Σ target-token losses / target tokens, ppl = exp of that. Records
// longer than the window are scored with a sliding window: windows of `window` tokens advance by
// `stride`, and each token is a target in exactly one window (the first that reaches it), with up
// to window - stride tokens of context before it.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

#include "dsft/train/dataset.h"

namespace dsft::model {
class CausalLMImpl;
}

namespace dsft::eval {

struct WindowOptions {
  int64_t window = 2048;  // most tokens one forward sees
  int64_t stride = 0;     // 0: window / 2
};

// The stride `options` resolve to; a window below 2 or a stride outside [1, window - 1] is a
// dsft::UsageError.
int64_t resolved_stride(const WindowOptions& options);

// The windows of one record (the record itself when it fits): each a Sample whose labels_mask
// keeps only the targets first scored in that window.
std::vector<train::Sample> sliding_windows(const train::Sample& record, const WindowOptions& options);

struct PerplexityResult {
  double loss_sum = 0.0;  // Σ over target tokens of -log p(token | context)
  int64_t tokens = 0;     // target tokens
  int64_t records = 0;
  int64_t windows = 0;
  double loss() const;  // loss_sum / tokens (NaN without tokens)
  double ppl() const;   // exp(loss())
};

// Scores `records` (one Sample per record, untruncated) with the model in eval mode, no gradients,
// `batch_size` windows per forward.
PerplexityResult perplexity(model::CausalLMImpl& model, const std::vector<train::Sample>& records,
                            const WindowOptions& options, int64_t batch_size, int32_t pad_id,
                            const c10::Device& device);

}  // namespace dsft::eval
