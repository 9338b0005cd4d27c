// TrainConfig: everything `dsft train` reads from its YAML file and `key=value` overrides.
// Keys follow HF TrainingArguments and PEFT LoraConfig so that existing recipes carry over.
// Precedence: defaults < YAML < command line. Torch-free: the CLI and tests parse configs cheaply.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsft::train {

enum class SchedulerType { linear, cosine, constant, constant_with_warmup };
enum class FinetuningType { lora, qlora, full };
enum class LoraBias { none, all, lora_only };
enum class Quantization { none, nf4, int8 };

const char* to_string(SchedulerType t);
const char* to_string(FinetuningType t);
const char* to_string(LoraBias t);
const char* to_string(Quantization t);

struct TrainConfig {
  // --- model and run directory
  std::string model_name_or_path;  // HF-format directory (config.json + *.safetensors)
  // A built-in preset, <arch>-<preset> (e.g. llama-tiny): when model_name_or_path does not exist,
  // a random model of that shape is created there, with a SentencePiece tokenizer trained on the
  // training data (smoke runs, demos). "" = the model must exist.
  std::string model_init;
  std::string output_dir = "runs/train";
  std::string resume_from_checkpoint;  // "" (fresh run), a checkpoint-<step> path, or "auto"

  // --- schedule length (max_steps > 0 wins over num_train_epochs, as in HF)
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;
  int64_t per_device_train_batch_size = 8;
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;

  // --- optimizer (AdamW) and learning-rate schedule
  double learning_rate = 5e-5;
  SchedulerType lr_scheduler_type = SchedulerType::linear;
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;  // > 0 wins over warmup_ratio, as in HF
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;  // 0 disables clipping
  int64_t seed = 42;
  int64_t data_seed = -1;  // shuffling and mixing; -1 means "use seed"

  // --- numerics and memory
  bool bf16 = false;
  bool fp16 = false;
  bool gradient_checkpointing = false;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N

  // --- checkpoints, evaluation, logging
  int64_t save_steps = 500;       // 0: save only at the end (and on interruption)
  int64_t save_total_limit = 0;   // 0: keep every checkpoint
  int64_t eval_steps = 0;         // 0: evaluate when saving (if there is evaluation data)
  int64_t logging_steps = 10;
  int64_t early_stopping_patience = 0;  // evaluations without improvement; 0 disables
  double early_stopping_threshold = 0.0;
  bool load_best_model_at_end = false;
  std::string metric_for_best_model = "eval_loss";
  // Whether a larger metric is better; resolved from the metric name when not given
  // (names ending in "loss" or "ppl" are lower-is-better).
  bool greater_is_better = false;
  std::string log_level = "info";  // debug | info | warn | error

  // --- what is trained
  FinetuningType finetuning_type = FinetuningType::lora;
  int64_t r = 8;  // also accepted as lora_r
  double lora_alpha = 16.0;
  double lora_dropout = 0.05;
  std::vector<std::string> target_modules{"all-linear"};  // module names, or "all-linear"
  LoraBias bias = LoraBias::none;
  bool use_rslora = false;
  std::vector<std::string> modules_to_save;

  // --- frozen-base quantization (qlora); resolved to nf4 for qlora when not given
  Quantization quantization = Quantization::none;
  bool double_quant = true;
  int64_t quant_block_size = 64;

  // --- data
  std::vector<std::string> dataset;  // JSONL files in the record schema (text | alpaca | messages)
  std::string train_file;            // a single file, added to `dataset`
  std::string validation_file;
  double val_size = 0.0;  // fraction of the training records held out when no validation_file
  int64_t max_seq_length = 2048;
  bool packing = false;
  std::string chat_template;  // "" = the model family's template
  bool train_on_inputs = false;  // false: loss only on responses (prompt tokens masked)
  std::string mix_dataset;       // general data mixed in against forgetting
  double mix_ratio = 0.0;        // fraction of training samples drawn from mix_dataset

  // Derived views the trainer uses.
  std::vector<std::string> train_files() const;  // dataset + train_file, in that order
  bool has_evaluation() const { return !validation_file.empty() || val_size > 0.0; }
  int64_t resolved_data_seed() const { return data_seed >= 0 ? data_seed : seed; }
  // Warmup steps for a run of `total_steps` optimizer steps (HF: warmup_steps, else
  // ceil(warmup_ratio * total_steps)).
  int64_t num_warmup_steps(int64_t total_steps) const;
  // Steps between evaluations (eval_steps, else save_steps); 0 = only at the end.
  int64_t resolved_eval_steps() const { return eval_steps > 0 ? eval_steps : save_steps; }
};

// Parses YAML text (a mapping of the keys above) and then `key=value` overrides, whose values are
// read as YAML scalars or flow lists (`target_modules=[q_proj,v_proj]`). `source` names the text
// in error messages. Unknown keys, wrong types and invalid values throw dsft::Error naming the key
// and value (and the closest valid key for unknown ones). The result is validated and resolved.
TrainConfig parse_train_config(const std::string& yaml_text,
                               const std::vector<std::string>& overrides = {},
                               const std::string& source = "config");

// Reads `path` and parses it as above.
TrainConfig load_train_config(const std::string& path,
                              const std::vector<std::string>& overrides = {});

// Checks cross-field rules (also run by the parsers); throws dsft::Error on the first violation.
void validate(const TrainConfig& cfg);

// The resolved config as YAML, every key in a fixed order; parse_train_config(to_yaml(c)) == c.
std::string to_yaml(const TrainConfig& cfg);

// Writes to_yaml(cfg) to `path` atomically (mode 0600), e.g. <output_dir>/config.yaml, with a
// header line saying it is the resolved configuration of the run.
void write_config(const TrainConfig& cfg, const std::string& path);

// A stable hex digest (FNV-1a 64) of the keys that determine the optimisation trajectory, so that
// a resume can tell whether the run it continues was configured the same way. Keys that may
// change across a resume (output_dir, resume_from_checkpoint, logging, saving, device, log_level,
// max_steps, num_train_epochs) are left out.
std::string config_hash(const TrainConfig& cfg);

// Every accepted key (aliases included), for help texts and "did you mean" hints.
const std::vector<std::string>& train_config_keys();

}  // namespace dsft::train
