// bf16 tensor data as the raw 16-bit words the fused CPU loops (cpu_kernels.h) read and write.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include <cstdint>

namespace dsft::model {

inline uint16_t* bf16_bits(const at::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
}

}  // namespace dsft::model
