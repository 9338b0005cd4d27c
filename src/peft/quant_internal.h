// The two implementations behind NF4 quantisation: plain ATen ops (any device) and a one-pass CPU
// loop. quant.cpp picks by device; tests compare the two on the CPU.
#pragma once
#include <ATen/ATen.h>

#include "dsft/peft/quant.h"

namespace dsft::peft::detail {

// Codes and block absmax of a contiguous float32 1-D tensor, as nf4_quantize stores them.
void nf4_quantize_generic(const at::Tensor& flat, int64_t block_size, at::Tensor* packed, at::Tensor* absmax);
void nf4_quantize_cpu(const at::Tensor& flat, int64_t block_size, at::Tensor* packed, at::Tensor* absmax);

// Blocks [b0, b1) decoded to float32 (1-D, clipped at the tensor's end); `scales` = their absmax.
at::Tensor nf4_decode_generic(const Nf4Weight& q, int64_t b0, int64_t b1, const at::Tensor& scales);
at::Tensor nf4_decode_cpu(const Nf4Weight& q, int64_t b0, int64_t b1, const at::Tensor& scales);

}  // namespace dsft::peft::detail
