// The matrix products of the LoRA layer. bf16 products on the CPU call oneDNN directly (the
// shared library libtorch itself links, where the build found it), with each primitive built
// once per shape and layout and the scale applied in the fp32 accumulator; libtorch's own path
// builds the primitive again on every call, which costs a third of a rank-16 product. Any other
// dtype or device, or a build without that library, uses torch::mm.
#pragma once
#include <ATen/core/Tensor.h>

namespace dsft::peft {

// alpha · a b for 2-D a [M, K] and b [K, N] (either may be a transposed view).
at::Tensor product(const at::Tensor& a, const at::Tensor& b, double alpha = 1.0);

// c += alpha · a b in place; c is a contiguous [M, N] of a's dtype.
void add_product_(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double alpha = 1.0);

// c = alpha · a b (+ c when `accumulate`) into an existing [M, N] tensor in a's dtype or in fp32
// (on the CPU, bf16 products then round once, from the fp32 sums; elsewhere the product is taken
// in a's dtype and widened). c may be a strided view; oneDNN takes row-major outputs only (others
// go through libtorch).
void product_into(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double alpha = 1.0,
                  bool accumulate = false);

// True when this build calls oneDNN directly for bf16 products on this CPU.
bool direct_bf16_matmul();

}  // namespace dsft::peft
