// The trainer's pieces on tiny random models: gradient accumulation is normalised by the target
// tokens of the whole step; gradient checkpointing gives the gradients of the plain forward (with
// LoRA dropout drawing the same masks); LoRA merged into the base computes the adapted model's
// logits for every family; packed records do not see each other; padded batches run as one row
// of their real tokens; the memory plan counts what a built model holds.
#include "dsft/train/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "dsft/model/commands.h"
#include "dsft/model/registry.h"
#include "dsft/peft/inject.h"
#include "dsft/train/config.h"
#include "dsft/train/memory_plan.h"

using namespace dsft;

namespace {

model::ModelConfig tiny_config(const std::string& arch) {
  for (const auto& [name, text] : model::builtin_presets())
    if (name == arch + "-tiny") return model::parse_config(nlohmann::json::parse(text));
  throw std::runtime_error("no tiny preset for " + arch);
}

model::CausalLM tiny_model(const std::string& arch, uint64_t seed = 3) {
  auto lm = model::build_model(tiny_config(arch), torch::TensorOptions().dtype(torch::kFloat32));
  model::init_weights(*lm, seed);
  return lm;
}

// A record of `n` tokens whose last `targets` tokens are targets.
train::Sample sample(int64_t n, int64_t targets, int32_t first_id, int32_t segment = 0) {
  train::Sample s;
  for (int64_t i = 0; i < n; ++i) {
    s.ids.push_back(first_id + static_cast<int32_t>((i * 7) % 50));
    s.labels_mask.push_back(i >= n - targets ? 1 : 0);
    s.segment_ids.push_back(segment);
  }
  return s;
}

// samples[indices] padded into one batch, as the data loader makes them.
train::Batch batch_of(const std::vector<train::Sample>& samples, const std::vector<size_t>& indices) {
  std::vector<const train::Sample*> picked;
  for (size_t i : indices) picked.push_back(&samples.at(i));
  return train::collate(picked, /*pad_id=*/0);
}

std::map<std::string, torch::Tensor> grads(model::CausalLMImpl& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters())
    if (p.value().grad().defined()) out[p.key()] = p.value().grad().clone();
  return out;
}

void zero_grads(model::CausalLMImpl& m) {
  for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
}

double max_rel_diff(const std::map<std::string, torch::Tensor>& a,
                    const std::map<std::string, torch::Tensor>& b) {
  double worst = 0.0;
  for (const auto& [k, t] : a) {
    const auto& u = b.at(k);
    const double scale = std::max(1e-12, t.abs().max().item<double>());
    worst = std::max(worst, (t - u).abs().max().item<double>() / scale);
  }
  return worst;
}

}  // namespace

TEST(Trainer, AccumulationNormalisesByTheStepsTargetTokens) {
  torch::manual_seed(0);
  auto lm = tiny_model("llama");
  const torch::Device cpu(torch::kCPU);
  // Different lengths and very different target counts: 9 vs 2.
  const std::vector<train::Sample> s = {sample(12, 9, 5), sample(7, 2, 60)};

  train::accumulate_gradients(*lm, {batch_of(s, {0}), batch_of(s, {1})}, cpu, {});
  auto two_micro = grads(*lm);
  zero_grads(*lm);
  auto one = train::accumulate_gradients(*lm, {batch_of(s, {0, 1})}, cpu, {});
  auto one_batch = grads(*lm);
  zero_grads(*lm);
  EXPECT_EQ(one.target_tokens, 11);
  ASSERT_EQ(two_micro.size(), one_batch.size());
  ASSERT_FALSE(two_micro.empty());
  EXPECT_LT(max_rel_diff(two_micro, one_batch), 1e-5);

  // The mean of per-batch means weights the short batch's tokens 4.5x more: another gradient.
  for (size_t i = 0; i < 2; ++i) {
    train::BatchTensors t = train::to_tensors(batch_of(s, {i}), cpu);
    train::loss_sum(*lm, t, {}, 0.5 / static_cast<double>(t.target_tokens));
  }
  auto mean_of_means = grads(*lm);
  EXPECT_GT(max_rel_diff(mean_of_means, one_batch), 1e-2);
}

TEST(Trainer, GradientCheckpointingGivesTheSameGradients) {
  for (const std::string arch : {"llama", "deepseek_v3"}) {
    SCOPED_TRACE(arch);
    auto lm = tiny_model(arch);
    peft::LoraConfig lc;
    lc.r = 4;
    lc.lora_alpha = 8;
    lc.lora_dropout = 0.2;  // the recomputation must replay the same dropout masks
    lc.target_modules = {"all-linear"};
    peft::inject_lora(*lm, lc);
    peft::for_each_linear(*lm, [](const std::string&, peft::LinearImpl& l) {
      if (l.has_lora()) {
        torch::NoGradGuard g;
        l.lora_B->weight.normal_(0.0, 0.05);
      }
    });
    lm->train();
    train::Sample packed = sample(9, 6, 3, 0);
    for (int i = 0; i < 5; ++i) {
      packed.ids.push_back(40 + i);
      packed.labels_mask.push_back(i > 0);
      packed.segment_ids.push_back(1);
    }
    auto t = train::to_tensors(batch_of({packed, sample(6, 3, 11)}, {0, 1}), torch::kCPU);

    torch::manual_seed(11);
    const double plain = train::loss_sum(*lm, t, {false, 4}, 1.0);
    auto g_plain = grads(*lm);
    zero_grads(*lm);
    torch::manual_seed(11);
    const double ckpt = train::loss_sum(*lm, t, {true, 4}, 1.0);
    auto g_ckpt = grads(*lm);
    zero_grads(*lm);
    EXPECT_EQ(plain, ckpt);
    ASSERT_EQ(g_plain.size(), g_ckpt.size());
    EXPECT_FALSE(g_plain.empty());
    EXPECT_LT(max_rel_diff(g_plain, g_ckpt), 1e-6);
  }
}

TEST(Trainer, MergedLoraEqualsBasePlusAdapterForEveryFamily) {
  for (const auto& family : model::families()) {
    SCOPED_TRACE(family.name);
    auto lm = tiny_model(family.name, 5);
    peft::LoraConfig lc;
    lc.r = 4;
    lc.lora_alpha = 16;
    lc.target_modules = {"all-linear"};
    auto inj = peft::inject_lora(*lm, lc);
    EXPECT_FALSE(inj.adapted.empty());
    peft::for_each_linear(*lm, [](const std::string&, peft::LinearImpl& l) {
      if (l.has_lora()) {
        torch::NoGradGuard g;
        l.lora_B->weight.normal_(0.0, 0.1);
      }
    });
    lm->eval();
    torch::NoGradGuard no_grad;
    auto ids = torch::randint(0, lm->config().vocab_size, {2, 7}, torch::kInt64);
    auto base = [&] {
      peft::set_adapters_enabled(*lm, false);
      auto l = lm->forward(ids);
      peft::set_adapters_enabled(*lm, true);
      return l;
    }();
    auto adapted = lm->forward(ids);
    // The adapters change the function (else the comparison below proves nothing).
    EXPECT_GT((adapted - base).abs().max().item<double>(), 1e-3);
    peft::merge_adapters(*lm);
    int left = 0;
    peft::for_each_linear(*lm, [&](const std::string&, peft::LinearImpl& l) { left += l.has_lora(); });
    EXPECT_EQ(left, 0);
    auto merged = lm->forward(ids);
    const double scale = adapted.abs().max().item<double>();
    EXPECT_LT((merged - adapted).abs().max().item<double>() / scale, 1e-5);
  }
}

TEST(Trainer, PackedRecordsDoNotSeeEachOther) {
  auto lm = tiny_model("qwen2");
  lm->eval();
  torch::NoGradGuard no_grad;
  train::Sample a = sample(6, 5, 7, 0), b = sample(5, 4, 30, 0);
  train::Sample packed = a;
  for (size_t i = 0; i < b.ids.size(); ++i) {
    packed.ids.push_back(b.ids[i]);
    packed.labels_mask.push_back(b.labels_mask[i]);
    packed.segment_ids.push_back(1);
  }
  auto loss = [&](const std::vector<train::Sample>& s) {
    auto t = train::to_tensors(batch_of(s, {0}), torch::kCPU);
    return train::loss_sum(*lm, t, {}, std::nullopt);
  };
  const double separate = loss({a}) + loss({b});
  EXPECT_NEAR(loss({packed}), separate, 1e-4 * std::abs(separate));
}

TEST(Trainer, PaddedBatchesRunWithoutPaddingAndRowsStayApart) {
  auto lm = tiny_model("llama");
  const torch::Device cpu(torch::kCPU);
  // Row 0: one record of 40 tokens (id 0); row 1: records of 4 (id 0, like row 0's) and 3 tokens
  // (id 1), then 33 slots of padding. Row 1 opens with a target that has no logit before it.
  train::Sample two = sample(4, 2, 60, 0), second = sample(3, 2, 80, 1);
  two.ids.insert(two.ids.end(), second.ids.begin(), second.ids.end());
  two.labels_mask.insert(two.labels_mask.end(), second.labels_mask.begin(), second.labels_mask.end());
  two.segment_ids.insert(two.segment_ids.end(), second.segment_ids.begin(), second.segment_ids.end());
  two.labels_mask[0] = 1;
  const std::vector<train::Sample> s = {sample(40, 9, 5), two};

  const auto t = train::to_tensors(batch_of(s, {0, 1}), cpu);
  // 47 real tokens in one row, padded to 48 (a multiple of 16) instead of 80 slots.
  EXPECT_EQ(t.input_ids.sizes(), torch::IntArrayRef({1, 48}));
  EXPECT_EQ(t.tokens, 47);
  EXPECT_EQ(t.target_tokens, 9 + 2 + 2);
  ASSERT_EQ(t.spans.size(), 4u);  // three records and the padding
  EXPECT_EQ(t.spans[1].begin, 40);
  EXPECT_EQ(t.spans[1].length, 4);
  EXPECT_EQ(t.spans[3].begin, 47);
  EXPECT_EQ(t.position_ids[0][40].item<int64_t>(), 0);
  EXPECT_EQ(t.position_ids[0][46].item<int64_t>(), 2);
  EXPECT_EQ(t.segment_ids[0][47].item<int64_t>(), -1);
  EXPECT_FALSE(t.labels_mask[0][47].item<bool>());

  // Loss and gradients are those of the rows run one at a time.
  const double together = train::loss_sum(*lm, t, {}, 1.0);
  const auto g_together = grads(*lm);
  zero_grads(*lm);
  double apart = 0.0;
  for (size_t i = 0; i < 2; ++i)
    apart += train::loss_sum(*lm, train::to_tensors(batch_of(s, {i}), cpu), {}, 1.0);
  const auto g_apart = grads(*lm);
  zero_grads(*lm);
  EXPECT_NEAR(together, apart, 1e-5 * std::abs(apart));
  ASSERT_FALSE(g_apart.empty());
  EXPECT_LT(max_rel_diff(g_together, g_apart), 1e-4);
}

TEST(MemoryPlan, CountsWhatTheBuiltModelHolds) {
  train::TrainConfig cfg = train::parse_train_config(
      "model_name_or_path: m\ndataset: [d.jsonl]\nfinetuning_type: lora\nr: 4\ntarget_modules: all-linear\n"
      "per_device_train_batch_size: 2\nmax_seq_length: 64\n");
  for (const std::string arch : {"llama", "deepseek_v3"}) {
    SCOPED_TRACE(arch);
    const auto mc = tiny_config(arch);
    auto plan = train::plan_memory(cfg, mc, "cpu", int64_t{1} << 40);
    auto lm = tiny_model(arch);
    int64_t dense = 0;
    for (const auto& p : lm->parameters()) dense += p.numel();
    auto inj = peft::inject_lora(*lm, train::lora_config_from(cfg));
    const auto counted = peft::count_parameters(*lm);
    EXPECT_EQ(plan.weights_bytes, dense * 4);
    EXPECT_EQ(plan.trainable_params, counted.trainable);
    EXPECT_EQ(plan.adapter_bytes, counted.trainable * 4);
    EXPECT_EQ(plan.optimizer_bytes, counted.trainable * 8);
    EXPECT_GT(plan.activation_bytes_full, plan.activation_bytes_checkpointed);
    EXPECT_TRUE(plan.fits());
    EXPECT_FALSE(train::plan_memory(cfg, mc, "cpu", 1024).fits());
  }
  // QLoRA stores the frozen linears in about half a byte per weight.
  train::TrainConfig q = cfg;
  q.finetuning_type = train::FinetuningType::qlora;
  q.quantization = train::Quantization::nf4;
  const auto mc = tiny_config("llama");
  auto lora_plan = train::plan_memory(cfg, mc, "cpu", int64_t{1} << 40);
  auto qlora_plan = train::plan_memory(q, mc, "cpu", int64_t{1} << 40);
  EXPECT_LT(qlora_plan.weights_bytes, lora_plan.weights_bytes);
  EXPECT_EQ(qlora_plan.adapter_bytes, lora_plan.adapter_bytes);
}
