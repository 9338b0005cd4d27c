// dsft::peft::Linear: dense or quantised base, optional LoRA adapter, merge. The quantised
// matmul is a custom autograd function that dequantises row chunks again in backward, so no
// dequantised copy of the weight outlives the call (bitsandbytes' MatMul4Bit does the same).
#include "dsft/peft/lora_linear.h"

#include <torch/torch.h>

#include <cmath>
#include <ostream>
#include <string>

#include "dsft/peft/matmul.h"
#include "dsft/util/error.h"

namespace dsft::peft {

double LoraOptions::scale() const {
  return use_rslora_ ? alpha_ / std::sqrt(static_cast<double>(r_)) : alpha_ / static_cast<double>(r_);
}

const char* base_format_name(BaseFormat format) {
  switch (format) {
    case BaseFormat::dense:
      return "dense";
    case BaseFormat::nf4:
      return "nf4";
    case BaseFormat::int8:
      return "int8";
  }
  return "?";
}

LoraMatrixImpl::LoraMatrixImpl(int64_t rows, int64_t cols, torch::TensorOptions options) {
  weight = register_parameter("weight", torch::zeros({rows, cols}, options));
}

void LoraMatrixImpl::pretty_print(std::ostream& stream) const {
  stream << "dsft::peft::LoraMatrix(" << weight.size(0) << ", " << weight.size(1) << ")";
}

namespace {

// What the autograd function needs of a quantised base: the storage and its layout.
struct QuantView {
  BaseFormat format = BaseFormat::nf4;
  Nf4Weight nf4;
  Int8Weight int8;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t chunk_rows = 1;
};

torch::Tensor dequant_rows(const QuantView& v, int64_t begin, int64_t end, torch::Dtype dtype) {
  if (v.format == BaseFormat::int8) return int8_dequantize_rows(v.int8, begin, end, dtype);
  return nf4_dequantize_range(v.nf4, begin * v.cols, end * v.cols, dtype)
      .view({end - begin, v.cols});  // [rows in chunk, in]
}

void save_view(torch::autograd::AutogradContext* ctx, const QuantView& v) {
  auto& d = ctx->saved_data;
  d["format"] = static_cast<int64_t>(v.format);
  d["rows"] = v.rows;
  d["cols"] = v.cols;
  d["chunk_rows"] = v.chunk_rows;
  if (v.format == BaseFormat::int8) {
    d["q"] = v.int8.q;
    d["scale"] = v.int8.scale;
    return;
  }
  d["shape"] = v.nf4.shape;
  d["numel"] = v.nf4.numel;
  d["block_size"] = v.nf4.block_size;
  d["packed"] = v.nf4.packed;
  d["double_quant"] = v.nf4.double_quant;
  if (v.nf4.double_quant) {
    d["dq_block_size"] = v.nf4.dq_block_size;
    d["qabsmax"] = v.nf4.qabsmax;
    d["absmax2"] = v.nf4.absmax2;
    d["absmax_offset"] = static_cast<double>(v.nf4.absmax_offset);
  } else {
    d["absmax"] = v.nf4.absmax;
  }
}

QuantView load_view(torch::autograd::AutogradContext* ctx) {
  auto& d = ctx->saved_data;
  QuantView v;
  v.format = static_cast<BaseFormat>(d["format"].toInt());
  v.rows = d["rows"].toInt();
  v.cols = d["cols"].toInt();
  v.chunk_rows = d["chunk_rows"].toInt();
  if (v.format == BaseFormat::int8) {
    v.int8.q = d["q"].toTensor();
    v.int8.scale = d["scale"].toTensor();
    return v;
  }
  v.nf4.shape = d["shape"].toIntVector();
  v.nf4.numel = d["numel"].toInt();
  v.nf4.block_size = d["block_size"].toInt();
  v.nf4.packed = d["packed"].toTensor();
  v.nf4.double_quant = d["double_quant"].toBool();
  if (v.nf4.double_quant) {
    v.nf4.dq_block_size = d["dq_block_size"].toInt();
    v.nf4.qabsmax = d["qabsmax"].toTensor();
    v.nf4.absmax2 = d["absmax2"].toTensor();
    v.nf4.absmax_offset = static_cast<float>(d["absmax_offset"].toDouble());
  } else {
    v.nf4.absmax = d["absmax"].toTensor();
  }
  return v;
}

// y = x W^T with W dequantised chunk by chunk; the gradient reaches x only (the base is frozen).
struct QuantizedMatmul : public torch::autograd::Function<QuantizedMatmul> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const QuantView& v) {
    save_view(ctx, v);
    ctx->saved_data["input_sizes"] = input.sizes().vec();
    torch::Tensor x = input.reshape({-1, v.cols});  // [N, in]
    std::vector<torch::Tensor> parts;
    for (int64_t r0 = 0; r0 < v.rows; r0 += v.chunk_rows) {
      int64_t r1 = std::min(v.rows, r0 + v.chunk_rows);
      parts.push_back(torch::mm(x, dequant_rows(v, r0, r1, input.scalar_type()).t()));
    }
    torch::Tensor y = parts.size() == 1 ? parts[0] : torch::cat(parts, 1);  // [N, out]
    std::vector<int64_t> out_sizes = input.sizes().vec();
    out_sizes.back() = v.rows;
    return y.view(out_sizes);  // [..., out]
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    QuantView v = load_view(ctx);
    std::vector<int64_t> input_sizes = ctx->saved_data["input_sizes"].toIntVector();
    torch::Tensor g = grad_outputs[0].reshape({-1, v.rows});  // [N, out]
    torch::Tensor grad_x = torch::zeros({g.size(0), v.cols}, g.options());
    for (int64_t r0 = 0; r0 < v.rows; r0 += v.chunk_rows) {
      int64_t r1 = std::min(v.rows, r0 + v.chunk_rows);
      grad_x.addmm_(g.slice(1, r0, r1), dequant_rows(v, r0, r1, g.scalar_type()));
    }
    return {grad_x.view(input_sizes), torch::Tensor()};
  }
};

// y = x Wᵀ + (x Aᵀ · scale) Bᵀ as one autograd node for a dense frozen base, with A and B
// used in x's dtype (cast per call when they are kept in fp32). The backward sends one gradient
// to x (dy W + (dy B · scale) A, accumulated in place) and casts dA, dB to the factors' dtype:
// no graph of casts, scalings and additions per layer, and only x and the r-wide x Aᵀ are kept.
struct LoraLinearFn : public torch::autograd::Function<LoraLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& lora_a,
                               const torch::Tensor& lora_b, double scale) {
    const auto dt = input.scalar_type();
    const int64_t in = weight.size(1), out = weight.size(0);
    const torch::Tensor x = input.reshape({-1, in});  // [N, in]
    const torch::Tensor a = lora_a.to(dt), b = lora_b.to(dt);
    const torch::Tensor mid = peft::product(x, a.t(), scale);  // [N, r]
    // The adapter's product first, then the base product accumulates onto it: the sum is taken
    // as the large product writes its output, not in a second pass over it.
    torch::Tensor y = peft::product(mid, b.t());
    peft::add_product_(y, x, weight.t());  // [N, out]
    ctx->save_for_backward({x, weight, a, b, mid});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["lora_dtype"] = static_cast<int64_t>(lora_a.scalar_type());
    std::vector<int64_t> sizes = input.sizes().vec();
    sizes.back() = out;
    return y.view(sizes);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1], &a = saved[2], &b = saved[3], &mid = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto lora_dtype = static_cast<torch::Dtype>(ctx->saved_data["lora_dtype"].toInt());
    const torch::Tensor dy = grad_outputs[0].reshape({-1, weight.size(0)}).to(x.scalar_type());  // [N, out]
    const torch::Tensor dmid = peft::product(dy, b, scale);                                      // [N, r]
    torch::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = peft::product(dmid, a);
      peft::add_product_(dx, dy, weight);
      std::vector<int64_t> sizes = grad_outputs[0].sizes().vec();
      sizes.back() = weight.size(1);
      dx = dx.view(sizes);
    }
    // Written straight in the factors' dtype (fp32 factors: the bf16 products' fp32 sums).
    torch::Tensor da = torch::empty({a.size(0), a.size(1)}, x.options().dtype(lora_dtype));  // [r, in]
    peft::product_into(da, dmid.t(), x);
    // dBᵀ = midᵀ dy: the r-row product reads dy row by row (dyᵀ mid reads it transposed, 2x slower).
    torch::Tensor dbt = torch::empty({b.size(1), b.size(0)}, x.options().dtype(lora_dtype));  // [r, out]
    peft::product_into(dbt, mid.t(), dy);
    torch::Tensor db = dbt.t().contiguous();
    return {dx, torch::Tensor(), da, db, torch::Tensor()};
  }
};

}  // namespace

LinearImpl::LinearImpl(const LinearOptions& options) : options_(options) {
  if (options_.in_features() <= 0 || options_.out_features() <= 0) {
    throw dsft::Error("linear layer sizes must be positive (got in_features " +
                      std::to_string(options_.in_features()) + ", out_features " +
                      std::to_string(options_.out_features()) + ")");
  }
  const torch::TensorOptions& topt = options_.tensor_options();
  weight =
      register_parameter("weight", torch::empty({options_.out_features(), options_.in_features()}, topt));
  if (options_.bias()) bias = register_parameter("bias", torch::empty({options_.out_features()}, topt));
  if (options_.initialize()) reset_parameters();
}

void LinearImpl::reset_parameters() {
  if (is_quantized()) {
    throw dsft::Error("cannot re-initialise a quantised linear layer; build a new one");
  }
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(options_.in_features()));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::quantized_linear(const torch::Tensor& input) const {
  QuantView v;
  v.format = format_;
  v.rows = options_.out_features();
  v.cols = options_.in_features();
  v.chunk_rows = std::max<int64_t>(1, dequant_chunk_elements_ / v.cols);
  if (format_ == BaseFormat::nf4) {
    v.nf4 = nf4_;
  } else {
    v.int8 = int8_;
  }
  return QuantizedMatmul::apply(input, v);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& input) {
  if (input.dim() == 0 || input.size(-1) != options_.in_features()) {
    throw dsft::Error("linear layer expects inputs whose last dimension is " +
                      std::to_string(options_.in_features()) + " (got shape " + c10::str(input.sizes()) +
                      ")");
  }
  // A dense frozen base without active dropout: one node (LoraLinearFn), with or without grad
  // mode, so that evaluation and a checkpointed layer's two passes compute what training does.
  if (has_lora() && adapter_enabled_ && !is_quantized() && !weight.requires_grad() &&
      (lora_dropout.is_empty() || !is_training()) &&
      (lora_autocast_ || input.scalar_type() == lora_A->weight.scalar_type()) &&
      input.scalar_type() == weight.scalar_type()) {
    torch::Tensor y =
        LoraLinearFn::apply(input, weight, lora_A->weight, lora_B->weight, lora_options_.scale());
    return bias.defined() ? y + bias : y;
  }
  torch::Tensor y;
  if (is_quantized()) {
    y = quantized_linear(input);
    if (bias.defined()) y = y + bias.to(y.scalar_type());
  } else {
    y = torch::linear(input, weight, bias);
  }
  if (!has_lora() || !adapter_enabled_) return y;
  const torch::Dtype in_dtype = input.scalar_type();
  if (lora_autocast_ && (in_dtype == torch::kBFloat16 || in_dtype == torch::kHalf) &&
      lora_A->weight.scalar_type() != in_dtype) {
    // Autocast: both products in the input's dtype; the scale goes on the r-wide middle, and
    // the second product accumulates onto the base output in one addmm.
    torch::Tensor h = input;
    if (!lora_dropout.is_empty()) h = lora_dropout->forward(h);
    torch::Tensor mid = torch::linear(h, lora_A->weight.to(in_dtype)) * lora_options_.scale();  // [..., r]
    const int64_t out = options_.out_features(), r = lora_options_.r();
    torch::Tensor y2 = torch::addmm(y.reshape({-1, out}).to(in_dtype), mid.reshape({-1, r}),
                                    lora_B->weight.to(in_dtype).t());  // [N, out]
    return y2.view(y.sizes());
  }
  // PEFT's order: cast to the adapter's dtype, dropout, A then B, scale, cast back.
  torch::Tensor h = input.to(lora_A->weight.scalar_type());
  if (!lora_dropout.is_empty()) h = lora_dropout->forward(h);
  torch::Tensor lora = torch::linear(torch::linear(h, lora_A->weight), lora_B->weight);
  return y + (lora * lora_options_.scale()).to(y.scalar_type());
}

void LinearImpl::quantize(BaseFormat format, const Nf4Options& nf4) {
  if (format == BaseFormat::dense) return;
  if (is_quantized()) {
    throw dsft::Error(std::string("linear layer is already quantised (") + base_format_name(format_) +
                      "); quantise a dense layer only once");
  }
  torch::NoGradGuard no_grad;
  quantized_dtype_ = weight.scalar_type();
  if (format == BaseFormat::nf4) {
    nf4_ = nf4_quantize(weight, nf4);
  } else {
    int8_ = int8_quantize(weight);
  }
  format_ = format;
  // The dense weight leaves the module (ParameterDict removes entries the same way).
  parameters_.erase("weight");
  weight = torch::Tensor();
}

torch::Tensor LinearImpl::base_weight(torch::Dtype dtype) const {
  switch (format_) {
    case BaseFormat::nf4:
      return nf4_dequantize(nf4_, dtype);
    case BaseFormat::int8:
      return int8_dequantize(int8_, dtype);
    case BaseFormat::dense:
      break;
  }
  return weight.to(dtype);
}

void LinearImpl::replace_base_weight(const torch::Tensor& w) {
  const std::vector<int64_t> expected = {options_.out_features(), options_.in_features()};
  if (w.sizes().vec() != expected) {
    throw dsft::Error("base weight must have shape " + c10::str(c10::IntArrayRef(expected)) + " (got " +
                      c10::str(w.sizes()) + ")");
  }
  torch::NoGradGuard no_grad;
  if (is_quantized()) {
    weight = register_parameter("weight", w.detach().clone(), /*requires_grad=*/false);
    nf4_ = Nf4Weight();
    int8_ = Int8Weight();
    format_ = BaseFormat::dense;
    return;
  }
  weight.set_data(w.detach().clone());
}

torch::Dtype LinearImpl::base_dtype() const {
  return is_quantized() ? quantized_dtype_ : weight.scalar_type();
}

torch::Device LinearImpl::base_device() const {
  switch (format_) {
    case BaseFormat::nf4:
      return nf4_.packed.device();
    case BaseFormat::int8:
      return int8_.q.device();
    case BaseFormat::dense:
      break;
  }
  return weight.device();
}

int64_t LinearImpl::base_nbytes() const {
  switch (format_) {
    case BaseFormat::nf4:
      return nf4_.nbytes();
    case BaseFormat::int8:
      return int8_.nbytes();
    case BaseFormat::dense:
      break;
  }
  return weight.numel() * static_cast<int64_t>(weight.element_size());
}

void LinearImpl::set_dequant_chunk_elements(int64_t elements) {
  if (elements <= 0) {
    throw dsft::Error("dequantisation chunk must be positive (got " + std::to_string(elements) +
                      " elements)");
  }
  dequant_chunk_elements_ = elements;
}

void LinearImpl::enable_lora(const LoraOptions& options) {
  if (options.r() <= 0) {
    throw dsft::Error("LoRA rank r must be positive (got " + std::to_string(options.r()) + ")");
  }
  if (!std::isfinite(options.alpha())) {
    throw dsft::Error("lora_alpha must be a finite number (got " + std::to_string(options.alpha()) + ")");
  }
  if (!(options.dropout() >= 0.0 && options.dropout() < 1.0)) {
    throw dsft::Error("lora_dropout must be in [0, 1) (got " + std::to_string(options.dropout()) + ")");
  }
  if (!c10::isFloatingType(options.dtype())) {
    throw dsft::Error(std::string("LoRA weights need a floating dtype (got ") +
                      c10::toString(options.dtype()) + ")");
  }
  if (has_lora()) remove_lora();
  torch::NoGradGuard no_grad;
  const auto target = torch::TensorOptions().dtype(options.dtype()).device(base_device());
  // Initialised in float32 on the CPU, so that a seed gives the same adapter on every device.
  torch::Tensor a = torch::empty({options.r(), options_.in_features()});
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_A = register_module("lora_A", LoraMatrix(options.r(), options_.in_features(), target));
  lora_A->weight.copy_(a);
  lora_B = register_module("lora_B", LoraMatrix(options_.out_features(), options.r(), target));
  if (options.dropout() > 0.0) {
    lora_dropout = register_module("lora_dropout", torch::nn::Dropout(options.dropout()));
    lora_dropout->train(is_training());
  }
  if (weight.defined()) weight.set_requires_grad(false);
  lora_options_ = options;
  adapter_enabled_ = true;
}

void LinearImpl::remove_lora() {
  if (!lora_A.is_empty()) unregister_module("lora_A");
  if (!lora_B.is_empty()) unregister_module("lora_B");
  if (!lora_dropout.is_empty()) unregister_module("lora_dropout");
  lora_A = LoraMatrix(nullptr);
  lora_B = LoraMatrix(nullptr);
  lora_dropout = torch::nn::Dropout(nullptr);
}

void LinearImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  if (format_ == BaseFormat::nf4) nf4_ = nf4_.to(device, non_blocking);
  if (format_ == BaseFormat::int8) int8_ = int8_.to(device, non_blocking);
  if (is_quantized()) quantized_dtype_ = dtype;
}

void LinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  if (is_quantized()) quantized_dtype_ = dtype;
}

void LinearImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  if (format_ == BaseFormat::nf4) nf4_ = nf4_.to(device, non_blocking);
  if (format_ == BaseFormat::int8) int8_ = int8_.to(device, non_blocking);
}

void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << "dsft::peft::Linear(in_features=" << options_.in_features()
         << ", out_features=" << options_.out_features() << ", bias=" << (bias.defined() ? "true" : "false")
         << ", base=" << base_format_name(format_);
  if (has_lora()) {
    stream << ", lora_r=" << lora_options_.r() << ", lora_alpha=" << lora_options_.alpha()
           << (lora_options_.use_rslora() ? ", rslora" : "")
           << (adapter_enabled_ ? "" : ", adapter disabled");
  }
  stream << ")";
}

torch::Tensor merged_weight(const LinearImpl& linear) {
  torch::NoGradGuard no_grad;
  torch::Tensor w = linear.base_weight(torch::kFloat32);
  if (linear.has_lora()) {
    torch::Tensor ba = torch::mm(linear.lora_B->weight.to(torch::kFloat32),
                                 linear.lora_A->weight.to(torch::kFloat32));  // [out, in]
    w = w + ba.to(w.device()) * linear.lora_scale();
  }
  return w.to(linear.base_dtype());
}

void merge_and_unload(LinearImpl& linear) {
  torch::Tensor merged = merged_weight(linear);
  linear.remove_lora();
  linear.replace_base_weight(merged);
}

}  // namespace dsft::peft
