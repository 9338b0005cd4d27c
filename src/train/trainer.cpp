// The pieces of the training loop: batches to tensors, the chunked fp32 cross-entropy over target
// tokens, gradient accumulation normalised by the step's target tokens, and evaluation. The loop
// itself is in trainer_run.cpp, what precedes loading in trainer_setup.cpp.
#include "dsft/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "dsft/model/loss.h"
#include "dsft/train/checkpoint.h"
#include "dsft/util/error.h"

namespace dsft::train {

peft::LoraConfig lora_config_from(const TrainConfig& cfg) {
  peft::LoraConfig lc;
  lc.r = cfg.r;
  lc.lora_alpha = cfg.lora_alpha;
  lc.lora_dropout = cfg.lora_dropout;
  lc.target_modules = cfg.target_modules;
  lc.bias = to_string(cfg.bias);
  lc.use_rslora = cfg.use_rslora;
  lc.modules_to_save = cfg.modules_to_save;
  return lc;
}

// ---------------------------------------------------------------------------------------------
// Batches

namespace {

// The real tokens of every row, in order, as one row [1, N]: no product, norm or attention then
// runs on padding. Each (row, record id) pair gets its own id, so records of different rows never
// merge while a record id used twice in one row still marks one record (document_spans() then
// falls back to the mask, as for the rows it came from). The first token of each row had no
// logit before it: it stays no target (nor does a row's first real token after padding).
// The row is then padded up to a multiple of kRowMultiple slots (never past B·T): a row length
// of its own for every batch would make every product a new shape, and each new shape costs the
// CPU back end a kernel build (a few per cent of a step) and cache memory.
constexpr int64_t kRowMultiple = 16;

Batch without_padding(const Batch& b) {
  const int64_t B = b.batch_size, T = b.seq_len;
  Batch f;
  f.batch_size = 1;
  std::map<std::pair<int64_t, int32_t>, int32_t> ids;
  for (int64_t r = 0; r < B; ++r) {
    bool first = true;
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(r * T + t);
      if (b.segment_ids[i] < 0) continue;
      const auto id =
          ids.emplace(std::make_pair(r, b.segment_ids[i]), static_cast<int32_t>(ids.size())).first;
      f.input_ids.push_back(b.input_ids[i]);
      f.labels_mask.push_back(first ? uint8_t{0} : b.labels_mask[i]);
      f.target_tokens += f.labels_mask.back();
      f.segment_ids.push_back(id->second);
      f.position_ids.push_back(b.position_ids[i]);
      first = false;
    }
  }
  const int64_t real = static_cast<int64_t>(f.input_ids.size());
  const int64_t padded = std::min(B * T, (real + kRowMultiple - 1) / kRowMultiple * kRowMultiple);
  const auto pad_slot =
      std::find_if(b.segment_ids.begin(), b.segment_ids.end(), [](int32_t s) { return s < 0; });
  const int64_t pad_id = b.input_ids[static_cast<size_t>(pad_slot - b.segment_ids.begin())];
  f.input_ids.resize(static_cast<size_t>(padded), pad_id);
  f.labels_mask.resize(static_cast<size_t>(padded), 0);
  f.segment_ids.resize(static_cast<size_t>(padded), -1);
  f.position_ids.resize(static_cast<size_t>(padded), 0);
  f.seq_len = padded;
  return f;
}

}  // namespace

BatchTensors to_tensors(const Batch& batch, const torch::Device& device) {
  {
    const int64_t B = batch.batch_size, T = batch.seq_len;
    if (B <= 0 || T <= 0 || static_cast<int64_t>(batch.input_ids.size()) != B * T ||
        static_cast<int64_t>(batch.labels_mask.size()) != B * T ||
        static_cast<int64_t>(batch.segment_ids.size()) != B * T ||
        static_cast<int64_t>(batch.position_ids.size()) != B * T)
      throw Error("malformed batch: expected " + std::to_string(B) + " x " + std::to_string(T) +
                  " entries in input_ids, labels_mask, segment_ids and position_ids");
  }
  const auto real =
      std::count_if(batch.segment_ids.begin(), batch.segment_ids.end(), [](int32_t s) { return s >= 0; });
  std::optional<Batch> flat;
  if (real > 0 && real < static_cast<int64_t>(batch.segment_ids.size())) flat = without_padding(batch);
  const Batch& b = flat ? *flat : batch;
  const int64_t B = b.batch_size, T = b.seq_len;
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  BatchTensors t;
  t.input_ids = torch::from_blob(const_cast<int64_t*>(b.input_ids.data()), {B, T}, i64).clone().to(device);
  t.labels_mask = torch::from_blob(const_cast<uint8_t*>(b.labels_mask.data()), {B, T}, torch::kUInt8)
                      .to(torch::kBool)
                      .to(device);
  const auto segments =
      torch::from_blob(const_cast<int32_t*>(b.segment_ids.data()), {B, T}, torch::kInt32).to(torch::kInt64);
  t.spans = model::document_spans(segments);
  t.segment_ids = segments.to(device);
  t.position_ids =
      torch::from_blob(const_cast<int64_t*>(b.position_ids.data()), {B, T}, i64).clone().to(device);
  int64_t targets = 0;
  for (int64_t i = 0; i < B * T; ++i) {
    // Position 0 of a row never has a logit before it: it cannot be a target.
    if (b.labels_mask[i] && i % T != 0) ++targets;
  }
  t.target_tokens = targets;
  t.tokens = real;  // padding kept in the flat row is not counted
  return t;
}

// ---------------------------------------------------------------------------------------------
// Loss

double loss_sum(model::CausalLMImpl& m, const BatchTensors& b, const LossOptions& o,
                std::optional<double> backward_scale) {
  const int64_t B = b.input_ids.size(0), T = b.input_ids.size(1);
  if (T < 2 || b.target_tokens == 0) return 0.0;
  model::ForwardOptions fo;
  fo.position_ids = b.position_ids;
  // Attention within each record only (packing); padding forms its own block and is never a
  // target. Records as spans skip the masked-out work; the mask is the fallback.
  fo.spans = b.spans;
  if (fo.spans.empty()) fo.attention_mask = model::document_mask(b.segment_ids);
  const bool training = backward_scale.has_value() && torch::GradMode::is_enabled();
  if (training && o.gradient_checkpointing) {
    fo.layer_wrapper = [](const model::LayerFn& layer, const torch::Tensor& h) {
      return checkpoint(layer, h);
    };
  }
  torch::Tensor h = m.hidden_states(b.input_ids, fo);  // [B, T, H]
  const int64_t H = h.size(2);
  // The hidden state at t - 1 predicts the token at t.
  auto mask = b.labels_mask.narrow(1, 1, T - 1).reshape({-1});                        // [B*(T-1)]
  auto idx = mask.nonzero().reshape({-1});                                            // [N]
  auto sel = h.narrow(1, 0, T - 1).reshape({B * (T - 1), H}).index_select(0, idx);    // [N, H]
  auto targets = b.input_ids.narrow(1, 1, T - 1).reshape({-1}).index_select(0, idx);  // [N]
  const int64_t N = sel.size(0);
  // The lm_head and loss run chunk by chunk on a detached copy of the selected hidden states;
  // their gradient is then sent through the body in one backward.
  const bool body_grad = training && sel.requires_grad();
  torch::Tensor hd = body_grad ? sel.detach().requires_grad_(true) : sel;
  double total = 0.0;
  const int64_t chunk = std::max<int64_t>(1, o.chunk_tokens);
  for (int64_t i = 0; i < N; i += chunk) {
    const int64_t c = std::min(chunk, N - i);
    // Logits in the model's dtype; the loss reads them in fp32 (model::cross_entropy_sum).
    torch::Tensor ce = model::cross_entropy_sum(m.head(hd.narrow(0, i, c)), targets.narrow(0, i, c));
    total += ce.item<double>();
    if (training && ce.requires_grad()) (ce * *backward_scale).backward();
  }
  if (body_grad && hd.grad().defined()) sel.backward(hd.grad());
  return total;
}

StepLoss accumulate_gradients(model::CausalLMImpl& m, const std::vector<Batch>& micro_batches,
                              const torch::Device& device, const LossOptions& o, double loss_scale) {
  StepLoss out;
  std::vector<BatchTensors> tensors;
  tensors.reserve(micro_batches.size());
  for (const auto& b : micro_batches) {
    tensors.push_back(to_tensors(b, device));
    out.target_tokens += tensors.back().target_tokens;
    out.tokens += tensors.back().tokens;
  }
  if (out.target_tokens == 0) return out;
  // Every micro-batch's summed loss is divided by the targets of the whole step, so the gradient
  // is that of the step's mean token loss however the tokens fall into micro-batches.
  const double scale = loss_scale / static_cast<double>(out.target_tokens);
  double sum = 0.0;
  for (const auto& t : tensors) sum += loss_sum(m, t, o, scale);
  out.loss = sum / static_cast<double>(out.target_tokens);
  return out;
}

double evaluate(model::CausalLMImpl& m, const std::vector<Sample>& data, int64_t batch_size, int32_t pad_id,
                const torch::Device& device) {
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard no_grad;
  double sum = 0.0;
  int64_t targets = 0;
  for (size_t i = 0; i < data.size(); i += static_cast<size_t>(batch_size)) {
    std::vector<const Sample*> picked;
    for (size_t j = i; j < data.size() && j < i + static_cast<size_t>(batch_size); ++j)
      picked.push_back(&data[j]);
    BatchTensors t = to_tensors(collate(picked, pad_id), device);
    sum += loss_sum(m, t, {}, std::nullopt);
    targets += t.target_tokens;
  }
  if (was_training) m.train();
  return targets > 0 ? sum / static_cast<double>(targets) : std::nan("");
}

}  // namespace dsft::train
