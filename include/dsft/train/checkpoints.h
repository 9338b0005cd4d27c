// Run directories: checkpoint-<step>/ folders written atomically (a temp folder renamed into place),
// holding trainer_state.json, the trainable weights and the optimizer state (safetensors) and the
// resolved config; rotation under save_total_limit that keeps the best; `auto` resume.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dsft/train/early_stopping.h"
#include "dsft/train/grad.h"
#include "dsft/train/optimizer.h"
#include "dsft/train/rng.h"

namespace dsft::train {

// Where the data loader stands, so that a resumed run sees exactly the samples it had not seen:
// the epoch and the index of the next sample in that epoch's order (the shuffle is a pure function
// of data_seed and epoch; with packing, the index counts packed samples).
struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;
};

// trainer_state.json. Names shared with HF's file mean the same thing.
struct TrainerState {
  int64_t global_step = 0;        // optimizer steps taken
  double epoch = 0.0;             // progress in epochs (fractional)
  DataPosition data;
  int64_t lr_scheduler_step = 0;  // steps the learning-rate schedule has advanced
  int64_t total_tokens = 0;       // training tokens consumed so far
  LossScalerState loss_scaler;
  EarlyStoppingState early_stopping;
  std::optional<double> best_metric;
  std::string best_model_checkpoint;  // path of the checkpoint that holds best_metric
  std::string metric_for_best_model;
  RngSnapshot rng;
  std::string config_hash;
};

std::string to_json(const TrainerState& state);  // pretty-printed
// Throws dsft::Error naming `source` and the field on malformed input.
TrainerState trainer_state_from_json(const std::string& text, const std::string& source);

// File names inside a checkpoint directory.
inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kWeightsFile = "model.safetensors";
inline constexpr const char* kOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kConfigFile = "config.yaml";

// Tensors to and from safetensors (F32, BF16, F16, integer types); torch::Tensor <-> io::TensorView.
void save_tensors(const std::string& path, const std::vector<NamedParam>& tensors,
                  const std::map<std::string, std::string>& metadata = {});
std::map<std::string, torch::Tensor> load_tensors(const std::string& path);
// Copies the tensors of `path` into `params` (same names, shapes and dtypes), without recording
// autograd history. Every param must be present; extra tensors in the file are an error too.
void load_into(const std::string& path, const std::vector<NamedParam>& params);

struct CheckpointInfo {
  int64_t step = 0;
  std::string path;
};

// Holds an exclusive lock on an output directory (flock on <dir>/.lock) so that two runs never
// write into the same checkpoints. Throws dsft::Error when another process holds it.
class RunDirLock {
 public:
  explicit RunDirLock(const std::string& output_dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

class CheckpointManager {
 public:
  // Creates `output_dir` (0700) if needed and removes temp folders left by an interrupted save.
  // Hold a RunDirLock on output_dir while using this.
  explicit CheckpointManager(std::string output_dir);

  // Writes checkpoint-<state.global_step>/ and returns its path. `weights` are the trainable
  // tensors; `optimizer` may be null (evaluation-only saves). `extra` may write more files into
  // the (temp) directory it is given, e.g. an adapter_config.json. Files are 0600, folders 0700;
  // until the final rename nothing named checkpoint-* exists, so a crash never leaves a partial
  // checkpoint visible. An existing checkpoint of the same step is replaced.
  std::string save(const TrainerState& state, const std::vector<NamedParam>& weights, const AdamW* optimizer,
                   const std::string& config_yaml,
                   const std::function<void(const std::string& dir)>& extra = nullptr) const;

  // Complete checkpoints (folders checkpoint-<step> with a trainer_state.json), by step.
  std::vector<CheckpointInfo> list() const;
  std::optional<CheckpointInfo> latest() const;

  // Deletes the oldest checkpoints beyond `save_total_limit` (0: keep all), never the newest nor
  // `best_checkpoint` (so up to limit + 1 may remain, as in HF). Returns the deleted paths.
  std::vector<std::string> rotate(int64_t save_total_limit, const std::string& best_checkpoint) const;

  // resume_from_checkpoint as configured: "" -> nullopt; "auto" -> the latest complete
  // checkpoint in output_dir (nullopt when there is none); a path -> that checkpoint, which must
  // be complete (dsft::Error otherwise).
  std::optional<CheckpointInfo> resolve_resume(const std::string& resume_from_checkpoint) const;

  // The folder a checkpoint of `step` is saved to (for best_model_checkpoint before saving).
  std::string path_for(int64_t step) const;
  const std::string& output_dir() const { return dir_; }

 private:
  std::string dir_;
};

// Reads <checkpoint>/trainer_state.json.
TrainerState read_trainer_state(const std::string& checkpoint_dir);

// The training run an adapter came from, as `dsft train` lays it out: output_dir/adapter/ (the
// final adapter) or output_dir/checkpoint-N/ (which holds its own config.yaml). `run_dir` is
// output_dir; `config_path` the adapter folder's own config.yaml, else the run's; `metrics_path`
// the run's metrics.jsonl. Each is "" when absent (an adapter moved out of its run has none).
struct AdapterRun {
  std::string run_dir;
  std::string config_path;
  std::string metrics_path;
};
AdapterRun find_adapter_run(const std::string& adapter_dir);

}  // namespace dsft::train
