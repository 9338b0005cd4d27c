// dsft::peft::Linear: the linear layer every model uses. Plain, it is torch::nn::Linear (same
// parameter names, initialisation and numerics). It can hold its frozen base weight quantised
// (NF4 or int8, dequantised on the fly in row chunks) and carry a LoRA adapter:
//   y = x W^T + b + scale * (dropout(x) A^T) B^T,   scale = alpha / r  (alpha / sqrt(r) for rsLoRA)
// Registered names give PEFT's keys under the module's path: "weight", "bias", "lora_A.weight"
// [r, in] and "lora_B.weight" [out, r].
#pragma once
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <iosfwd>

#include "dsft/peft/quant.h"

namespace dsft::peft {

struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  // dtype and device the weight and bias are created with (a model builds them in the dtype it
  // loads into, so a checkpoint is copied once).
  TORCH_ARG(torch::TensorOptions, tensor_options) = {};
  // false: parameters are left uninitialised (torch::empty), for layers whose weights are loaded
  // or initialised by the caller; reset_parameters() initialises them later if wanted.
  TORCH_ARG(bool, initialize) = true;
};

struct LoraOptions {
  double scale() const;  // alpha / r, or alpha / sqrt(r) with use_rslora

  TORCH_ARG(int64_t, r) = 8;
  TORCH_ARG(double, alpha) = 8.0;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(bool, use_rslora) = false;
  // Adapter weights are created in float32 (PEFT's default) whatever the base dtype.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
};

enum class BaseFormat { dense, nf4, int8 };
const char* base_format_name(BaseFormat format);

// One LoRA factor: a module holding a single "weight" parameter, so that the factor's key is
// "<path>.lora_A.weight" as in PEFT checkpoints.
class LoraMatrixImpl : public torch::nn::Module {
 public:
  LoraMatrixImpl(int64_t rows, int64_t cols, torch::TensorOptions options);
  torch::Tensor weight;
  void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(LoraMatrix);

class LinearImpl : public torch::nn::Module {
 public:
  explicit LinearImpl(const LinearOptions& options);
  LinearImpl(int64_t in_features, int64_t out_features)
      : LinearImpl(LinearOptions(in_features, out_features)) {}

  // torch::nn::Linear's initialisation: weight kaiming-uniform(a = sqrt(5)), bias uniform
  // (-1/sqrt(in), 1/sqrt(in)). Only for a dense base. The constructor runs it unless
  // options.initialize() is false.
  void reset_parameters();

  torch::Tensor forward(const torch::Tensor& input);

  const LinearOptions& options() const { return options_; }

  // --- the base weight -------------------------------------------------------------------------
  BaseFormat format() const { return format_; }
  bool is_quantized() const { return format_ != BaseFormat::dense; }
  // Replaces the dense weight by its quantised form (the "weight" parameter disappears and its
  // memory is freed); the dtype it had is kept as the dtype of dequantised and merged weights.
  void quantize(BaseFormat format, const Nf4Options& nf4 = {});
  // The base weight [out, in] in `dtype`: the parameter itself (cast) when dense.
  torch::Tensor base_weight(torch::Dtype dtype) const;
  // Makes the base dense with `weight` [out, in] (its dtype and device kept); a quantised base is
  // dropped. A new parameter is frozen; an existing one keeps its requires_grad.
  void replace_base_weight(const torch::Tensor& weight);
  torch::Dtype base_dtype() const;
  torch::Device base_device() const;
  int64_t base_nbytes() const;  // bytes the base weight occupies
  const Nf4Weight& nf4_weight() const { return nf4_; }
  const Int8Weight& int8_weight() const { return int8_; }
  // Quantised bases are dequantised this many elements at a time (forward and backward).
  void set_dequant_chunk_elements(int64_t elements);

  // --- the LoRA adapter ------------------------------------------------------------------------
  // Adds an adapter (replacing any previous one): lora_A kaiming-uniform(a = sqrt(5)), lora_B zero,
  // both on the base weight's device. The base weight is frozen.
  void enable_lora(const LoraOptions& options);
  bool has_lora() const { return !lora_A.is_empty(); }
  const LoraOptions& lora_options() const { return lora_options_; }
  double lora_scale() const { return has_lora() ? lora_options_.scale() : 0.0; }
  // Off: the output is exactly the base layer's (the adapter stays attached).
  void set_adapter_enabled(bool enabled) { adapter_enabled_ = enabled; }
  bool adapter_enabled() const { return adapter_enabled_; }
  // Drops the adapter (its parameters leave the module).
  void remove_lora();
  // Mixed precision (what torch.autocast does to PEFT's layers): when the input is bf16/fp16 and
  // the adapter fp32, the adapter's two matrix products run in the input's dtype (the factors
  // are cast per call); the factors, their gradients and the optimizer states stay fp32. Off: the
  // input is cast to the adapter's dtype (PEFT's order without autocast).
  void set_lora_autocast(bool on) { lora_autocast_ = on; }
  bool lora_autocast() const { return lora_autocast_; }

  torch::Tensor weight;        // [out, in]; undefined when quantised
  torch::Tensor bias;          // [out]; undefined without bias
  LoraMatrix lora_A{nullptr};  // weight [r, in]
  LoraMatrix lora_B{nullptr};  // weight [out, r]
  torch::nn::Dropout lora_dropout{nullptr};

  // Quantised storage is not a parameter or buffer (so that state dicts keep HF keys and a
  // dtype cast leaves the codes alone): these move it along with the module.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;
  void pretty_print(std::ostream& stream) const override;

 private:
  torch::Tensor quantized_linear(const torch::Tensor& input) const;

  LinearOptions options_;
  BaseFormat format_ = BaseFormat::dense;
  Nf4Weight nf4_;
  Int8Weight int8_;
  torch::Dtype quantized_dtype_ = torch::kFloat32;  // the dense dtype a quantised base stands for
  int64_t dequant_chunk_elements_ = int64_t{1} << 24;
  LoraOptions lora_options_;
  bool adapter_enabled_ = true;
  bool lora_autocast_ = false;
};
TORCH_MODULE(Linear);

// W + scale * B A, computed in float32 and cast to the base dtype; a quantised base is
// dequantised. Pure: the layer is not changed. Without an adapter: the base weight.
torch::Tensor merged_weight(const LinearImpl& linear);

// Folds the adapter into a dense base weight (dequantising a quantised one) and removes it: the
// layer then computes the same function without the LoRA path (for export).
void merge_and_unload(LinearImpl& linear);

}  // namespace dsft::peft
