// Perplexity: sliding windows over untruncated records, scored in batches by the trainer's own
// loss (train::loss_sum), so that evaluation and training count exactly the same tokens.
#include "dsft/eval/perplexity.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "dsft/model/causal_lm.h"
#include "dsft/train/trainer.h"
#include "dsft/util/error.h"

namespace dsft::eval {

int64_t resolved_stride(const WindowOptions& o) {
  if (o.window < 2)
    throw UsageError("the perplexity window must be at least 2 tokens (got " + std::to_string(o.window) +
                     ")");
  const int64_t stride = o.stride > 0 ? o.stride : std::max<int64_t>(1, o.window / 2);
  if (stride >= o.window)
    throw UsageError("--stride " + std::to_string(stride) + " must be smaller than the window (" +
                     std::to_string(o.window) +
                     " tokens) so that every window keeps context before its targets");
  return stride;
}

std::vector<train::Sample> sliding_windows(const train::Sample& record, const WindowOptions& o) {
  const int64_t stride = resolved_stride(o);
  const auto L = static_cast<int64_t>(record.ids.size());
  if (L <= o.window) return {record};
  std::vector<train::Sample> out;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + o.window, L);
    train::Sample w;
    w.ids.assign(record.ids.begin() + begin, record.ids.begin() + end);
    w.labels_mask.assign(static_cast<size_t>(end - begin), 0);
    // Targets: the tokens no earlier window scored; position `begin` has no context here.
    for (int64_t t = std::max(prev_end, begin + 1); t < end; ++t)
      w.labels_mask[static_cast<size_t>(t - begin)] = record.labels_mask[static_cast<size_t>(t)];
    w.segment_ids.assign(w.ids.size(), 0);
    w.record_ids = record.record_ids;
    out.push_back(std::move(w));
    prev_end = end;
    if (end == L) break;
  }
  return out;
}

double PerplexityResult::loss() const {
  return tokens > 0 ? loss_sum / static_cast<double>(tokens) : std::numeric_limits<double>::quiet_NaN();
}
double PerplexityResult::ppl() const {
  return std::exp(loss());
}

PerplexityResult perplexity(model::CausalLMImpl& m, const std::vector<train::Sample>& records,
                            const WindowOptions& o, int64_t batch_size, int32_t pad_id,
                            const c10::Device& device) {
  PerplexityResult r;
  std::vector<train::Sample> windows;
  for (const auto& rec : records) {
    auto w = sliding_windows(rec, o);
    for (auto& s : w)
      if (std::find(s.labels_mask.begin(), s.labels_mask.end(), uint8_t{1}) != s.labels_mask.end())
        windows.push_back(std::move(s));
    ++r.records;
  }
  r.windows = static_cast<int64_t>(windows.size());
  // Longest first: windows of similar length share a batch, so little of it is padding.
  std::vector<size_t> order(windows.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return windows[a].ids.size() > windows[b].ids.size(); });
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard no_grad;
  const auto bs = static_cast<size_t>(std::max<int64_t>(1, batch_size));
  for (size_t i = 0; i < order.size(); i += bs) {
    std::vector<const train::Sample*> picked;
    for (size_t j = i; j < order.size() && j < i + bs; ++j) picked.push_back(&windows[order[j]]);
    const train::BatchTensors t = train::to_tensors(train::collate(picked, pad_id), device);
    r.loss_sum += train::loss_sum(m, t, {}, std::nullopt);
    r.tokens += t.target_tokens;
  }
  if (was_training) m.train();
  return r;
}

}  // namespace dsft::eval
