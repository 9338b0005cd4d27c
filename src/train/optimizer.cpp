// AdamW, transcribed from torch.optim.adamw._single_tensor_adamw (torch 1.13) so that the
// numbers agree with PyTorch's: the same tensor ops in the same order, bias corrections in double.
#include "dsft/train/optimizer.h"

#include <nlohmann/json.hpp>

#include <cmath>

#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"
#include "train/adamw_kernel.h"

namespace dsft::train {
namespace {
std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
}  // namespace

bool uses_weight_decay(const std::string& name, const torch::Tensor& param) {
  if (param.dim() < 2) return false;
  if (name.find("norm") != std::string::npos) return false;
  return !(name == "bias" || util::ends_with(name, ".bias"));
}

std::vector<ParamGroup> make_param_groups(const std::vector<NamedParam>& params, double weight_decay) {
  ParamGroup decay{{}, weight_decay}, no_decay{{}, 0.0};
  for (const auto& p : params) {
    if (!p.param.defined() || !p.param.requires_grad()) continue;
    (uses_weight_decay(p.name, p.param) ? decay : no_decay).params.push_back(p);
  }
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(std::move(decay));
  if (!no_decay.params.empty()) groups.push_back(std::move(no_decay));
  return groups;
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options) : options_(options) {
  if (!(options.lr >= 0)) throw Error("AdamW: learning rate must be 0 or more (got " + std::to_string(options.lr) + ")");
  if (!(options.beta1 >= 0 && options.beta1 < 1) || !(options.beta2 >= 0 && options.beta2 < 1))
    throw Error("AdamW: betas must be in [0, 1) (got " + std::to_string(options.beta1) + ", " +
                std::to_string(options.beta2) + ")");
  if (!(options.eps > 0)) throw Error("AdamW: eps must be positive (got " + std::to_string(options.eps) + ")");
  for (auto& g : groups) {
    if (g.weight_decay < 0) throw Error("AdamW: weight_decay must be 0 or more (got " + std::to_string(g.weight_decay) + ")");
    for (auto& p : g.params) {
      if (!p.param.defined()) throw Error("AdamW: parameter " + p.name + " is undefined");
      if (!p.param.is_floating_point())
        throw Error("AdamW: parameter " + p.name + " is not a floating-point tensor; it cannot be trained");
      if (index_.count(p.name)) throw Error("AdamW: parameter name " + p.name + " appears twice");
      index_[p.name] = slots_.size();
      slots_.push_back(Slot{p, g.weight_decay, State{}});
    }
  }
}

AdamW::State& AdamW::state_for(Slot& slot) {
  State& s = slot.state;
  if (!s.exp_avg.defined()) {
    const auto& p = slot.p.param;
    auto opts = p.options().dtype(torch::kFloat32);
    s.exp_avg = torch::zeros(p.sizes(), opts);
    s.exp_avg_sq = torch::zeros(p.sizes(), opts);
    if (p.scalar_type() != torch::kFloat32) s.master = p.detach().to(torch::kFloat32).clone();
  }
  return s;
}

void AdamW::step(double grad_multiplier) {
  torch::NoGradGuard no_grad;
  const double lr = options_.lr, beta1 = options_.beta1, beta2 = options_.beta2, eps = options_.eps;
  for (auto& slot : slots_) {
    const torch::Tensor& grad_in = slot.p.param.grad();
    if (!grad_in.defined()) continue;
    if (grad_in.is_sparse()) throw Error("AdamW: parameter " + slot.p.name + " has a sparse gradient");
    State& s = state_for(slot);
    // The fp32 tensor that is updated: the parameter itself, or its master copy.
    torch::Tensor param = s.master.defined() ? s.master : slot.p.param.detach();
    torch::Tensor grad = grad_in.scalar_type() == torch::kFloat32 ? grad_in : grad_in.to(torch::kFloat32);

    s.step += 1;
    const double step = static_cast<double>(s.step);
    const double bias_correction1 = 1 - std::pow(beta1, step);
    const double bias_correction2 = 1 - std::pow(beta2, step);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    if (param.device().is_cpu() && param.scalar_type() == torch::kFloat32 && param.is_contiguous() &&
        grad.device().is_cpu() && grad.is_contiguous() && grad.sizes() == param.sizes() &&
        s.exp_avg.is_contiguous() && s.exp_avg_sq.is_contiguous()) {
      // The same arithmetic in one pass (the loop below is the reference it follows).
      const kernels::AdamWScalars k{static_cast<float>(grad_multiplier),
                                    static_cast<float>(1 - lr * slot.weight_decay),
                                    static_cast<float>(beta1),
                                    static_cast<float>(1 - beta1),
                                    static_cast<float>(beta2),
                                    static_cast<float>(1 - beta2),
                                    static_cast<float>(bias_correction2_sqrt),
                                    static_cast<float>(eps),
                                    static_cast<float>(-step_size)};
      float* pp = param.data_ptr<float>();
      const float* gp = grad.data_ptr<float>();
      float *mp = s.exp_avg.data_ptr<float>(), *vp = s.exp_avg_sq.data_ptr<float>();
      at::parallel_for(0, param.numel(), 32768, [&](int64_t begin, int64_t end) {
        kernels::adamw_f32(pp, gp, mp, vp, k, begin, end);
      });
    } else {
      if (grad_multiplier != 1.0) grad = grad * grad_multiplier;
      if (slot.weight_decay != 0.0) param.mul_(1 - lr * slot.weight_decay);
      s.exp_avg.mul_(beta1).add_(grad, 1 - beta1);
      s.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      torch::Tensor denom = (s.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps);
      param.addcdiv_(s.exp_avg, denom, -step_size);
    }
    if (s.master.defined()) slot.p.param.detach().copy_(s.master);
  }
}

void AdamW::zero_grad() {
  for (auto& slot : slots_) {
    if (slot.p.param.grad().defined()) slot.p.param.mutable_grad() = torch::Tensor();
  }
}

std::vector<NamedParam> AdamW::params() const {
  std::vector<NamedParam> out;
  for (const auto& s : slots_) out.push_back(s.p);
  return out;
}

int64_t AdamW::param_step(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("AdamW: no parameter named " + name);
  return slots_[it->second].state.step;
}

void AdamW::save(const std::string& path) const {
  std::vector<torch::Tensor> keep;  // CPU, contiguous copies that outlive the write
  std::vector<io::TensorToWrite> tensors;
  nlohmann::json steps = nlohmann::json::object();
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    keep.push_back(c);
    tensors.push_back({name, io::DType::F32, c.sizes().vec(), c.data_ptr(), c.numel() * sizeof(float)});
  };
  for (const auto& slot : slots_) {
    const State& s = slot.state;
    if (!s.exp_avg.defined()) continue;
    add(slot.p.name + ".exp_avg", s.exp_avg);
    add(slot.p.name + ".exp_avg_sq", s.exp_avg_sq);
    if (s.master.defined()) add(slot.p.name + ".master", s.master);
    steps[slot.p.name] = s.step;
  }
  nlohmann::json opts = {{"lr", options_.lr}, {"beta1", options_.beta1}, {"beta2", options_.beta2}, {"eps", options_.eps}};
  io::write_safetensors(path, tensors, {{"format", "dsft-adamw"}, {"steps", steps.dump()}, {"options", opts.dump()}});
}

void AdamW::load(const std::string& path) {
  auto file = io::SafetensorsFile::open(path);
  const auto& meta = file->metadata();
  auto fmt = meta.find("format");
  auto steps_it = meta.find("steps");
  if (fmt == meta.end() || fmt->second != "dsft-adamw" || steps_it == meta.end())
    throw Error(path + " is not an optimizer state written by dsft (metadata format != dsft-adamw)");
  nlohmann::json steps;
  try {
    steps = nlohmann::json::parse(steps_it->second);
  } catch (const nlohmann::json::exception&) {
    throw Error(path + ": optimizer metadata 'steps' is not valid JSON");
  }
  if (!steps.is_object()) throw Error(path + ": optimizer metadata 'steps' is not an object");

  auto read = [&](const std::string& tensor_name, const torch::Tensor& like) {
    const io::TensorView& v = file->at(tensor_name);
    if (v.dtype != io::DType::F32) throw Error(path + ": tensor " + tensor_name + " is " + io::dtype_name(v.dtype) + ", expected F32");
    if (v.shape != like.sizes().vec())
      throw Error(path + ": tensor " + tensor_name + " has shape " + shape_str(v.shape) + " but the parameter has " +
                  shape_str(like.sizes().vec()) + " (was the checkpoint made with another r or model?)");
    torch::Tensor cpu = torch::from_blob(const_cast<uint8_t*>(v.data), v.shape, torch::kFloat32).clone();
    return cpu.to(like.device());
  };

  // Validate every entry before touching any state, so a bad file leaves the optimizer as it was.
  std::vector<std::pair<size_t, State>> loaded;
  for (const auto& [name, step] : steps.items()) {
    auto it = index_.find(name);
    if (it == index_.end())
      throw Error(path + " holds optimizer state for parameter " + name +
                  ", which is not trainable in this run (did target_modules or finetuning_type change?)");
    if (!step.is_number_integer() || step.get<int64_t>() < 0)
      throw Error(path + ": step count of " + name + " is not a non-negative integer");
    const Slot& slot = slots_[it->second];
    torch::Tensor like = slot.p.param.detach();
    State s;
    s.step = step.get<int64_t>();
    s.exp_avg = read(name + ".exp_avg", like);
    s.exp_avg_sq = read(name + ".exp_avg_sq", like);
    if (like.scalar_type() != torch::kFloat32) {
      if (!file->contains(name + ".master"))
        throw Error(path + ": parameter " + name + " is stored in low precision but the file has no fp32 master copy");
      s.master = read(name + ".master", like);
    }
    loaded.emplace_back(it->second, std::move(s));
  }
  for (auto& slot : slots_) slot.state = State{};
  for (auto& [i, s] : loaded) {
    // The parameter itself is restored from the weights file; the master must agree with it.
    slots_[i].state = std::move(s);
  }
}

}  // namespace dsft::train
