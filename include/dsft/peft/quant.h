// Frozen base weights in 4-bit NF4 (QLoRA) and 8-bit int8: quantised once, dequantised on the fly.
// NF4 follows bitsandbytes bit for bit (code book, decision thresholds, nibble order, absmax per
// block, double quantisation of the absmax values), so a weight quantised here decodes to the same
// numbers as one quantised by bitsandbytes on the same input.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <vector>

namespace dsft::peft {

// The 16 NF4 values, indexed by the 4-bit code (QLoRA paper, appendix E; bitsandbytes
// functional.py get_4bit_type("nf4")).
extern const std::array<float, 16> kNf4Code;

// bitsandbytes' dQuantizeNF4 decision tree flattened: the code of x is the number of thresholds
// strictly below x, so a value exactly on a midpoint takes the lower code, as there.
extern const std::array<float, 15> kNf4Thresholds;

// bitsandbytes' signed "dynamic" 8-bit map (create_dynamic_map(signed=True)), float32 [256],
// ascending. It quantises the absmax values in double quantisation.
at::Tensor dynamic_map_8bit();

struct Nf4Options {
  int64_t block_size = 64;      // elements per absmax block (even)
  bool double_quant = false;    // QLoRA's double quantisation of the absmax values
  int64_t dq_block_size = 256;  // absmax values per 8-bit block when double quantising
};

// A weight in NF4. Element 2i of the flattened weight sits in the high nibble of byte i and
// element 2i+1 in the low nibble (bitsandbytes' order).
struct Nf4Weight {
  std::vector<int64_t> shape;
  int64_t numel = 0;
  int64_t block_size = 64;
  at::Tensor packed;  // uint8 [(numel + 1) / 2]
  at::Tensor absmax;  // float32 [n_blocks]; undefined with double quantisation
  bool double_quant = false;
  int64_t dq_block_size = 256;
  at::Tensor qabsmax;          // uint8 [n_blocks]: indices into dynamic_map_8bit()
  at::Tensor absmax2;          // float32 [ceil(n_blocks / dq_block_size)]
  float absmax_offset = 0.0f;  // the mean absmax, subtracted before the 8-bit quantisation

  int64_t n_blocks() const { return (numel + block_size - 1) / block_size; }
  // Bytes of storage held (packed codes + scales): ~0.5 byte per element.
  int64_t nbytes() const;
  // The absmax of blocks [begin, end) as float32, undoing the double quantisation if any.
  at::Tensor block_absmax(int64_t begin, int64_t end) const;
  Nf4Weight to(const at::Device& device, bool non_blocking = false) const;
};

// Quantises any floating tensor (flattened in row-major order). Throws dsft::Error on an empty or
// non-finite input or a bad block size.
Nf4Weight nf4_quantize(const at::Tensor& weight, const Nf4Options& options = {});
// The whole tensor, in its original shape.
at::Tensor nf4_dequantize(const Nf4Weight& q, at::ScalarType dtype = at::kFloat);
// Elements [begin, end) of the flattened tensor, 1-D.
at::Tensor nf4_dequantize_range(const Nf4Weight& q, int64_t begin, int64_t end,
                                at::ScalarType dtype = at::kFloat);

// A 2-D weight in int8, symmetric per output row: w ≈ q * scale[row], scale = absmax(row) / 127.
struct Int8Weight {
  at::Tensor q;      // int8 [rows, cols]
  at::Tensor scale;  // float32 [rows]
  int64_t nbytes() const;
  Int8Weight to(const at::Device& device, bool non_blocking = false) const;
};

Int8Weight int8_quantize(const at::Tensor& weight);
at::Tensor int8_dequantize(const Int8Weight& q, at::ScalarType dtype = at::kFloat);
// Rows [begin, end), 2-D.
at::Tensor int8_dequantize_rows(const Int8Weight& q, int64_t begin, int64_t end,
                                at::ScalarType dtype = at::kFloat);

}  // namespace dsft::peft
