// Perplexity: equals the token losses computed by hand from the model's logits (full sequence and
// sliding windows), sliding windows change nothing when a record fits, every target is scored
// exactly once, and masked tokens never count.
#include "dsft/eval/perplexity.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "dsft/model/causal_lm.h"
#include "dsft/model/commands.h"
#include "dsft/model/config.h"
#include "dsft/model/registry.h"
#include "dsft/util/error.h"

using namespace dsft;

namespace {

model::CausalLM tiny_llama() {
  for (const auto& [name, text] : model::builtin_presets())
    if (name == "llama-tiny") {
      auto config = model::parse_config(nlohmann::json::parse(text));
      auto lm = model::build_model(config, torch::TensorOptions().dtype(torch::kFloat32));
      model::init_weights(*lm, 7);
      torch::NoGradGuard no_grad;
      for (auto& p : lm->parameters())
        if (p.dim() == 2) p.mul_(4.0);  // logits far from uniform, so errors show
      lm->eval();
      return lm;
    }
  throw std::runtime_error("no llama-tiny preset");
}

train::Sample make_record(int64_t len, int64_t vocab, uint64_t seed, int64_t prompt_len) {
  torch::manual_seed(seed);
  auto ids = torch::randint(3, vocab, {len}, torch::kInt64);
  train::Sample s;
  for (int64_t i = 0; i < len; ++i) {
    s.ids.push_back(static_cast<int32_t>(ids[i].item<int64_t>()));
    s.labels_mask.push_back(i >= prompt_len ? 1 : 0);
  }
  s.labels_mask[0] = 0;
  s.segment_ids.assign(static_cast<size_t>(len), 0);
  s.record_ids = {"r" + std::to_string(seed)};
  return s;
}

// -log p(ids[t] | ids[begin..t)) from one forward over ids[begin..t].
double token_loss(model::CausalLMImpl& lm, const train::Sample& s, int64_t begin, int64_t t) {
  std::vector<int64_t> ctx(s.ids.begin() + begin, s.ids.begin() + t);
  auto logits = lm.forward(torch::tensor(ctx, torch::kInt64).unsqueeze(0));  // [1, T, V]
  auto logp = torch::log_softmax(logits[0][-1].to(torch::kFloat64), -1);
  return -logp[s.ids[static_cast<size_t>(t)]].item<double>();
}

// Σ over targets of the full-sequence loss, from the logits of one forward per record.
double full_sequence_loss(model::CausalLMImpl& lm, const train::Sample& s, int64_t* targets) {
  std::vector<int64_t> ids(s.ids.begin(), s.ids.end());
  auto logits = lm.forward(torch::tensor(ids, torch::kInt64).unsqueeze(0));
  auto logp = torch::log_softmax(logits[0].to(torch::kFloat64), -1);  // [T, V]
  double sum = 0.0;
  for (size_t t = 1; t < s.ids.size(); ++t)
    if (s.labels_mask[t]) {
      sum -= logp[static_cast<int64_t>(t) - 1][s.ids[t]].item<double>();
      ++*targets;
    }
  return sum;
}

}  // namespace

TEST(Perplexity, EqualsTheLossComputedByHandFromTheLogits) {
  auto lm = tiny_llama();
  torch::NoGradGuard no_grad;
  const int64_t V = lm->config().vocab_size;
  std::vector<train::Sample> records = {make_record(17, V, 1, 5), make_record(9, V, 2, 0),
                                        make_record(30, V, 3, 12)};
  double expected = 0.0;
  int64_t targets = 0;
  for (const auto& r : records) expected += full_sequence_loss(*lm, r, &targets);
  eval::WindowOptions wo;
  wo.window = 64;
  const auto got = eval::perplexity(*lm, records, wo, /*batch_size=*/2, /*pad_id=*/0, torch::kCPU);
  EXPECT_EQ(got.tokens, targets);
  EXPECT_EQ(got.records, 3);
  EXPECT_EQ(got.windows, 3);
  EXPECT_NEAR(got.loss_sum, expected, 1e-3 * targets);
  EXPECT_NEAR(got.ppl(), std::exp(expected / static_cast<double>(targets)), 1e-3 * got.ppl());
}

TEST(Perplexity, BatchingAndPaddingDoNotChangeTheResult) {
  auto lm = tiny_llama();
  const int64_t V = lm->config().vocab_size;
  std::vector<train::Sample> records = {make_record(5, V, 4, 0), make_record(23, V, 5, 3),
                                        make_record(11, V, 6, 2)};
  eval::WindowOptions wo;
  wo.window = 32;
  const auto one = eval::perplexity(*lm, records, wo, 1, 0, torch::kCPU);
  const auto three = eval::perplexity(*lm, records, wo, 3, 0, torch::kCPU);
  EXPECT_EQ(one.tokens, three.tokens);
  EXPECT_NEAR(one.loss_sum, three.loss_sum, 1e-3);
}

TEST(Perplexity, SlidingWindowEqualsNoWindowWhenTheTextFits) {
  auto lm = tiny_llama();
  const int64_t V = lm->config().vocab_size;
  std::vector<train::Sample> records = {make_record(24, V, 7, 4)};
  eval::WindowOptions exact, wide;
  exact.window = 24;  // exactly the record's length: one window
  exact.stride = 8;
  wide.window = 100;
  EXPECT_EQ(eval::sliding_windows(records[0], exact).size(), 1u);
  const auto a = eval::perplexity(*lm, records, exact, 1, 0, torch::kCPU);
  const auto b = eval::perplexity(*lm, records, wide, 1, 0, torch::kCPU);
  EXPECT_EQ(a.windows, 1);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_DOUBLE_EQ(a.loss_sum, b.loss_sum);
}

TEST(Perplexity, SlidingWindowScoresEveryTargetOnceWithItsWindowContext) {
  auto lm = tiny_llama();
  torch::NoGradGuard no_grad;
  const int64_t V = lm->config().vocab_size;
  const train::Sample rec = make_record(21, V, 8, 3);
  eval::WindowOptions wo;
  wo.window = 8;
  wo.stride = 5;
  const auto windows = eval::sliding_windows(rec, wo);
  // begins 0, 5, 10, 15 (ends 8, 13, 18, 21)
  ASSERT_EQ(windows.size(), 4u);
  std::vector<int> scored(rec.ids.size(), 0);
  double expected = 0.0;
  int64_t prev_end = 0;
  for (size_t w = 0; w < windows.size(); ++w) {
    const int64_t begin = static_cast<int64_t>(w) * wo.stride;
    ASSERT_LE(static_cast<int64_t>(windows[w].ids.size()), wo.window);
    for (size_t i = 0; i < windows[w].ids.size(); ++i) {
      EXPECT_EQ(windows[w].ids[i], rec.ids[static_cast<size_t>(begin) + i]);
      if (windows[w].labels_mask[i]) {
        const int64_t t = begin + static_cast<int64_t>(i);
        ++scored[static_cast<size_t>(t)];
        EXPECT_GE(t, prev_end);
        expected += token_loss(*lm, rec, begin, t);  // context: the window up to t
      }
    }
    prev_end = begin + static_cast<int64_t>(windows[w].ids.size());
  }
  int64_t targets = 0;
  for (size_t t = 0; t < rec.ids.size(); ++t) {
    EXPECT_EQ(scored[t], rec.labels_mask[t]) << "position " << t;
    targets += rec.labels_mask[t];
  }
  const auto got = eval::perplexity(*lm, {rec}, wo, 2, 0, torch::kCPU);
  EXPECT_EQ(got.windows, 4);
  EXPECT_EQ(got.tokens, targets);
  EXPECT_NEAR(got.loss_sum, expected, 1e-3 * static_cast<double>(targets));
  // Less context than the full sequence gives: a different (here: not identical) sum.
  int64_t full_targets = 0;
  EXPECT_GT(std::abs(full_sequence_loss(*lm, rec, &full_targets) - got.loss_sum), 1e-4);
}

TEST(Perplexity, MaskedTokensDoNotCount) {
  auto lm = tiny_llama();
  const int64_t V = lm->config().vocab_size;
  train::Sample a = make_record(16, V, 9, 8);  // targets 8..15
  train::Sample b = a;
  for (size_t i = 1; i < 8; ++i) b.ids[i] = (b.ids[i] + 5) % static_cast<int32_t>(V);  // prompt differs
  eval::WindowOptions wo;
  wo.window = 16;
  const auto ra = eval::perplexity(*lm, {a}, wo, 1, 0, torch::kCPU);
  EXPECT_EQ(ra.tokens, 8);
  // Only targets count: zeroing the mask removes them; an all-prompt record scores nothing.
  train::Sample none = a;
  std::fill(none.labels_mask.begin(), none.labels_mask.end(), uint8_t{0});
  const auto rn = eval::perplexity(*lm, {none}, wo, 1, 0, torch::kCPU);
  EXPECT_EQ(rn.tokens, 0);
  EXPECT_TRUE(std::isnan(rn.loss()));
  // The prompt is context, so changing it changes the loss of the targets (it is read, not scored).
  const auto rb = eval::perplexity(*lm, {b}, wo, 1, 0, torch::kCPU);
  EXPECT_EQ(rb.tokens, 8);
  EXPECT_NE(ra.loss_sum, rb.loss_sum);
}

TEST(Perplexity, WindowAndStrideAreChecked) {
  eval::WindowOptions wo;
  wo.window = 1;
  EXPECT_THROW(eval::resolved_stride(wo), UsageError);
  wo.window = 8;
  wo.stride = 8;
  EXPECT_THROW(eval::resolved_stride(wo), UsageError);
  wo.stride = 0;
  EXPECT_EQ(eval::resolved_stride(wo), 4);
}
