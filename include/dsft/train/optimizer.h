// AdamW over parameter groups, as torch.optim.AdamW computes it (decoupled weight decay, bias
// correction, per-parameter step counts), with fp32 state for every parameter and an fp32 master
// copy for parameters stored in bf16/fp16. State saves to safetensors and restores bit-exactly.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsft::train {

struct NamedParam {
  std::string name;  // unique; the key of this parameter's optimizer state in checkpoints
  torch::Tensor param;
};

struct ParamGroup {
  std::vector<NamedParam> params;
  double weight_decay = 0.0;
};

// Whether a parameter gets weight decay: matrices do; 1-D tensors, norms (a name containing
// "norm") and biases (a name ending in ".bias" or equal to "bias") do not, as in HF's Trainer.
bool uses_weight_decay(const std::string& name, const torch::Tensor& param);

// Splits the parameters that require grad into a decayed group (weight_decay) and an undecayed
// group (0). Empty groups are left out.
std::vector<ParamGroup> make_param_groups(const std::vector<NamedParam>& params, double weight_decay);

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

class AdamW {
 public:
  // Throws dsft::Error on duplicate names, undefined or non-floating parameters, bad options.
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options);

  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  const AdamWOptions& options() const { return options_; }

  // One update from each parameter's .grad(), multiplied by `grad_multiplier` first (the loss
  // scaler's 1/scale times the clipping coefficient, applied in fp32 so that fp16 gradients are
  // not unscaled into underflow). Parameters without a gradient are skipped, as in torch.
  void step(double grad_multiplier = 1.0);
  // Drops every parameter's gradient (set_to_none, torch's default).
  void zero_grad();

  // Parameters in group order, and the number of updates each has received.
  std::vector<NamedParam> params() const;
  int64_t param_step(const std::string& name) const;  // 0 before the first update

  // Writes exp_avg, exp_avg_sq (and master, for low-precision params) of every parameter with
  // state into one safetensors file, with step counts and options in its metadata.
  void save(const std::string& path) const;
  // Restores what save() wrote. Throws dsft::Error naming the tensor when the file holds state
  // for a parameter this optimizer does not have, or shapes differ. Options are not overwritten.
  void load(const std::string& path);

 private:
  struct State {
    torch::Tensor exp_avg, exp_avg_sq;  // fp32, on the parameter's device
    torch::Tensor master;               // fp32 copy when the parameter is bf16/fp16; else undefined
    int64_t step = 0;
  };
  struct Slot {
    NamedParam p;
    double weight_decay;
    State state;
  };
  State& state_for(Slot& slot);

  std::vector<Slot> slots_;
  std::map<std::string, size_t> index_;
  AdamWOptions options_;
};

}  // namespace dsft::train
