// Gradient checkpointing as a custom autograd Function, following torch.utils.checkpoint's
// reentrant variant: forward without a graph, backward = recompute with grad + inner backward.
#include "dsft/train/checkpoint.h"

#include <torch/torch.h>

#include <set>

#include "dsft/train/rng.h"
#include "dsft/util/error.h"

namespace dsft::train {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Carries the closure through AutogradContext::saved_data, which holds IValues.
struct FnHolder : torch::CustomClassHolder {
  CheckpointFn fn;
  bool preserve_rng = true;
  std::vector<torch::Device> rng_devices;  // CPU first, then the CUDA devices of the inputs
  std::vector<torch::Tensor> rng_states;
};

// Sets the generators to the states of the forward pass and puts the current ones back on exit.
class RngFork {
 public:
  RngFork(const std::vector<torch::Device>& devices, const std::vector<torch::Tensor>& states) : devices_(devices) {
    for (size_t i = 0; i < devices.size(); ++i) {
      saved_.push_back(get_rng_state(devices[i]));
      set_rng_state(devices[i], states[i]);
    }
  }
  ~RngFork() {
    for (size_t i = 0; i < devices_.size(); ++i) set_rng_state(devices_[i], saved_[i]);
  }
  RngFork(const RngFork&) = delete;
  RngFork& operator=(const RngFork&) = delete;

 private:
  std::vector<torch::Device> devices_;
  std::vector<torch::Tensor> saved_;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // `inputs` ends with a dummy tensor that requires grad: it makes this node part of the graph
  // even when no real input requires grad, so that parameters inside fn still get gradients.
  // `inputs` is an ArrayRef so that autograd sees each element as a differentiable input.
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<FnHolder> holder, at::TensorList inputs) {
    variable_list real(inputs.begin(), inputs.end() - 1);
    if (holder->preserve_rng) {
      holder->rng_devices.push_back(torch::kCPU);
      std::set<int> cuda;
      for (const auto& t : real)
        if (t.defined() && t.is_cuda()) cuda.insert(t.get_device());
      for (int d : cuda) holder->rng_devices.emplace_back(torch::kCUDA, static_cast<c10::DeviceIndex>(d));
      for (const auto& d : holder->rng_devices) holder->rng_states.push_back(get_rng_state(d));
    }
    ctx->save_for_backward(real);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(holder);
    variable_list outputs;
    {
      torch::NoGradGuard no_grad;
      outputs = holder->fn(real);
    }
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto holder = c10::static_intrusive_pointer_cast<FnHolder>(ctx->saved_data["fn"].toCapsule());
    const variable_list saved = ctx->get_saved_variables();
    variable_list detached;
    for (const auto& t : saved) {
      if (!t.defined()) {
        detached.push_back(t);
        continue;
      }
      torch::Tensor d = t.detach();
      d.requires_grad_(t.requires_grad());
      detached.push_back(d);
    }

    variable_list outputs;
    {
      std::unique_ptr<RngFork> fork;
      if (holder->preserve_rng) fork = std::make_unique<RngFork>(holder->rng_devices, holder->rng_states);
      torch::AutoGradMode enable_grad(true);
      outputs = holder->fn(detached);
    }
    if (outputs.size() != grad_outputs.size())
      throw Error("checkpointed function returned " + std::to_string(outputs.size()) + " tensors on recomputation but " +
                  std::to_string(grad_outputs.size()) + " in the forward pass; it must be deterministic");

    variable_list outs, grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].defined() && outputs[i].requires_grad() && grad_outputs[i].defined()) {
        outs.push_back(outputs[i]);
        grads.push_back(grad_outputs[i]);
      }
    }
    // Accumulates into the parameters fn closes over and into the detached inputs' .grad.
    if (!outs.empty()) torch::autograd::backward(outs, grads);

    // One entry per forward argument: the holder (not a tensor), each input, the dummy.
    variable_list result;
    result.emplace_back();
    for (const auto& d : detached) result.push_back(d.defined() && d.requires_grad() ? d.grad() : torch::Tensor());
    result.emplace_back();
    return result;
  }
};

}  // namespace

TensorList checkpoint(CheckpointFn fn, const TensorList& inputs, bool preserve_rng_state) {
  if (!fn) throw Error("checkpoint: no function given");
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  auto holder = c10::make_intrusive<FnHolder>();
  holder->fn = std::move(fn);
  holder->preserve_rng = preserve_rng_state;
  variable_list args(inputs.begin(), inputs.end());
  args.push_back(torch::empty({0}, torch::requires_grad()));
  return CheckpointFunction::apply(holder, at::TensorList(args));
}

torch::Tensor checkpoint(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& input,
                         bool preserve_rng_state) {
  auto outputs = checkpoint([fn](const TensorList& in) { return TensorList{fn(in[0])}; }, TensorList{input},
                            preserve_rng_state);
  return outputs[0];
}

}  // namespace dsft::train
