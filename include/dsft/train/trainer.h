// The trainer: `dsft train` as one function, run(config). It checks the memory plan, loads the
// model (creating a tiny random one where the config asks for it), adds LoRA / quantises / unfreezes
// as finetuning_type says, tokenises the data, and runs the loop: micro-batches accumulated with the
// loss normalised by the step's target tokens, AdamW with warmup schedule and clipping, fp16 loss
// scaling, gradient checkpointing, evaluation with early stopping, checkpoints that resume exactly,
// and a clean stop on Ctrl-C. Also the pieces the loop is made of, for tests.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "dsft/model/causal_lm.h"
#include "dsft/peft/lora_config.h"
#include "dsft/train/config.h"
#include "dsft/train/dataset.h"
#include "dsft/train/memory_plan.h"

namespace dsft::train {

// Target tokens whose logits are computed at once by the loss (the [tokens, vocab] fp32 logits
// of a whole batch would dominate memory for large vocabularies).
inline constexpr int64_t kLossChunkTokens = 1024;

// The PEFT LoraConfig a training config describes.
peft::LoraConfig lora_config_from(const TrainConfig& cfg);

// The memory plan of `cfg`, from model_name_or_path/config.json only (nothing is loaded). When
// the model directory does not exist yet but model_init names a preset, that preset is planned.
MemoryPlan plan_for(const TrainConfig& cfg);
// Throws dsft::Error with the plan's figures when it does not fit.
void require_fits(const MemoryPlan& plan, const TrainConfig& cfg);

// Creates model_name_or_path when it is missing and model_init names a built-in preset
// ("llama-tiny"): a random model with a SentencePiece tokenizer trained on the training files.
// Returns whether a model was created.
bool ensure_model(const TrainConfig& cfg);

// One batch as tensors on a device. A batch with padding becomes one row of its N real tokens
// (row after row; records keep their positions and never see each other), padded only up to a
// multiple of 16 slots (no more than B·T), so that little work is spent on padding; a batch
// without padding keeps its [B, T] rows.
struct BatchTensors {
  torch::Tensor input_ids;     // int64 [B, T]
  torch::Tensor labels_mask;   // bool [B, T]: position t is a target (predicted from t - 1)
  torch::Tensor segment_ids;   // int64 [B, T], -1 on padding
  torch::Tensor position_ids;  // int64 [B, T], restarting at 0 for each record
  // The records as attention spans (model::document_spans), found on the host; empty when a
  // record id occurs in two separate runs of a row (the mask is used then).
  std::vector<model::Span> spans;
  int64_t target_tokens = 0;
  int64_t tokens = 0;  // real (non-padding) tokens
};
BatchTensors to_tensors(const Batch& batch, const torch::Device& device);

struct LossOptions {
  bool gradient_checkpointing = false;
  int64_t chunk_tokens = kLossChunkTokens;
};

// Σ over target tokens of the cross-entropy (fp32) of `batch`: the final hidden states at the
// positions before targets go through lm_head in chunks. With `backward_scale` set, backpropagates
// sum * backward_scale (the caller's normalisation and loss scale) chunk by chunk, so that only one
// chunk of logits is alive at a time. Packed samples attend only within their record.
double loss_sum(model::CausalLMImpl& model, const BatchTensors& batch, const LossOptions& options,
                std::optional<double> backward_scale);

struct StepLoss {
  double loss = 0.0;  // Σ token losses / Σ target tokens over the step's micro-batches
  int64_t target_tokens = 0;
  int64_t tokens = 0;
};

// Forward and backward over the micro-batches of one optimizer step. Gradients accumulate in the
// parameters' .grad as those of loss_scale * (Σ token losses / Σ target tokens of ALL micro-batches),
// i.e. the step's mean token loss, not a mean of per-batch means.
StepLoss accumulate_gradients(model::CausalLMImpl& model, const std::vector<Batch>& micro_batches,
                              const torch::Device& device, const LossOptions& options,
                              double loss_scale = 1.0);

// Mean token loss over every sample of `data` (eval mode, no gradients); NaN when it has no targets.
double evaluate(model::CausalLMImpl& model, const std::vector<Sample>& data, int64_t batch_size,
                int32_t pad_id, const torch::Device& device);

struct TrainResult {
  int64_t global_step = 0;
  int64_t total_steps = 0;
  bool interrupted = false;    // a stop signal ended the run; a checkpoint was written first
  bool early_stopped = false;  // early_stopping_patience ran out
  std::optional<double> initial_eval_loss;
  std::optional<double> final_eval_loss;
  std::optional<double> final_train_loss;  // mean of the last logged interval
  std::string last_checkpoint;
  std::string best_checkpoint;
  std::string output;  // output_dir/adapter (lora, qlora) or output_dir/model (full); "" if interrupted
};

struct RunOptions {
  std::FILE* out = stderr;  // progress line and summary
  int progress_tty = -1;    // ProgressBar's tty: -1 ask isatty
};

// The whole run as `dsft train` does it. Throws dsft::Error for bad configs, data or models.
TrainResult run(const TrainConfig& cfg, const RunOptions& options = {});

}  // namespace dsft::train
