// Safetensors dtypes (names, sizes) and bit-exact scalar conversions for the narrow float formats
// (FP8 e4m3fn / e5m2, BF16, FP16), plus DeepSeek-V3's 128x128 block-scaled FP8 (de)quantisation.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"

namespace dsft::io {

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1},       {DType::U8, "U8", 1},     {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},         {DType::U16, "U16", 2},   {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},         {DType::I64, "I64", 8},   {DType::U64, "U64", 8},
    {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},         {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::F8_E5M2, "F8_E5M2", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d;
  throw Error("unknown dtype enum value " + std::to_string(static_cast<int>(dtype)));
}

uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// All 256 e4m3fn values, decoded once: dequantisation is a table lookup per element.
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = fp8_e4m3_to_float(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }

const char* dtype_name(DType dtype) { return info(dtype).name; }

DType parse_dtype(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  throw Error("unknown safetensors dtype '" + name +
              "' (expected one of BOOL U8 I8 I16 U16 I32 U32 I64 U64 F16 BF16 F32 F64 F8_E4M3 "
              "F8_E5M2)");
}

float fp8_e4m3_to_float(uint8_t code) {
  const bool neg = code & 0x80;
  const int exp = (code >> 3) & 0xF;
  const int man = code & 0x7;
  float v;
  if (exp == 0xF && man == 0x7) {
    v = std::numeric_limits<float>::quiet_NaN();  // e4m3fn spends its top code on NaN, not inf
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -9);  // subnormal: man/8 * 2^(1-7)
  } else {
    v = std::ldexp(static_cast<float>(8 + man), exp - 7 - 3);  // (1 + man/8) * 2^(exp-7)
  }
  return neg ? -v : v;
}

uint8_t float_to_fp8_e4m3(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (a >= 448.0f) return sign | 0x7E;  // saturate (e4m3fn has no infinity)
  if (a < std::ldexp(1.0f, -6)) {
    // Subnormal range: a multiple of 2^-9; nearbyint rounds half to even. 8 is the smallest normal.
    const int m = static_cast<int>(std::nearbyint(std::ldexp(a, 9)));
    return sign | static_cast<uint8_t>(m);
  }
  int e2;
  const float f = std::frexp(a, &e2);  // a = f * 2^e2, f in [0.5, 1)
  int e = e2 - 1;                       // a = (2f) * 2^e, 2f in [1, 2), e in [-6, 8]
  int m = static_cast<int>(std::nearbyint((2.0f * f - 1.0f) * 8.0f));  // exact product, RNE
  if (m == 8) {
    m = 0;
    ++e;
  }
  // a < 448 rounds at most to 448 = (1 + 6/8) * 2^8, so the NaN code 0x7F is never produced.
  return sign | static_cast<uint8_t>(((e + 7) << 3) | m);
}

float fp8_e5m2_to_float(uint8_t code) {
  const bool neg = code & 0x80;
  const int exp = (code >> 2) & 0x1F;
  const int man = code & 0x3;
  float v;
  if (exp == 0x1F) {
    v = man == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -16);
  } else {
    v = std::ldexp(static_cast<float>(4 + man), exp - 15 - 2);
  }
  return neg ? -v : v;
}

float bf16_to_float(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_bf16(float x) {
  const uint32_t u = float_bits(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x0040);  // keep it a quiet NaN
  const uint32_t rounding = 0x7FFF + ((u >> 16) & 1);                    // ties to even
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float fp16_to_float(uint16_t bits) {
  const bool neg = bits & 0x8000;
  const int exp = (bits >> 10) & 0x1F;
  const int man = bits & 0x3FF;
  float v;
  if (exp == 0x1F) {
    v = man == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);
  } else {
    v = std::ldexp(static_cast<float>(1024 + man), exp - 15 - 10);
  }
  return neg ? -v : v;
}

void quantize_fp8_e4m3_blockwise(const float* w, int64_t rows, int64_t cols,
                                 std::vector<uint8_t>& q, std::vector<float>& scale_inv) {
  if (rows < 0 || cols < 0)
    throw Error("cannot quantise a matrix of shape [" + std::to_string(rows) + ", " +
                std::to_string(cols) + "] to FP8");
  const int64_t br = (rows + kFp8BlockSize - 1) / kFp8BlockSize;
  const int64_t bc = (cols + kFp8BlockSize - 1) / kFp8BlockSize;
  q.assign(static_cast<size_t>(rows * cols), 0);
  scale_inv.assign(static_cast<size_t>(br * bc), 1.0f);
  for (int64_t bi = 0; bi < br; ++bi) {
    const int64_t r0 = bi * kFp8BlockSize, r1 = std::min(rows, r0 + kFp8BlockSize);
    for (int64_t bj = 0; bj < bc; ++bj) {
      const int64_t c0 = bj * kFp8BlockSize, c1 = std::min(cols, c0 + kFp8BlockSize);
      float amax = 0.0f;
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = c0; j < c1; ++j) {
          const float v = w[i * cols + j];
          if (!std::isfinite(v))
            throw Error("cannot quantise a non-finite value to FP8 (element [" +
                        std::to_string(i) + ", " + std::to_string(j) + "])");
          amax = std::max(amax, std::fabs(v));
        }
      // An all-zero block keeps scale 1 so that dequantisation never multiplies by 0/0.
      const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
      scale_inv[static_cast<size_t>(bi * bc + bj)] = scale;
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = c0; j < c1; ++j)
          q[static_cast<size_t>(i * cols + j)] = float_to_fp8_e4m3(w[i * cols + j] / scale);
    }
  }
}

void dequantize_fp8_e4m3_blockwise(const uint8_t* q, const float* scale_inv, int64_t rows,
                                   int64_t cols, uint16_t* out_bf16) {
  const auto& table = e4m3_table();
  const int64_t br = (rows + kFp8BlockSize - 1) / kFp8BlockSize;
  const int64_t bc = (cols + kFp8BlockSize - 1) / kFp8BlockSize;
  // Within a block every element is bf16(table[code] * scale): a 256-entry table per block
  // (256 products for up to 16384 elements) turns the rest into one lookup per byte.
  auto do_block_rows = [&](int64_t bi_begin, int64_t bi_end) {
    std::array<uint16_t, 256> lut;
    for (int64_t bi = bi_begin; bi < bi_end; ++bi) {
      const int64_t r0 = bi * kFp8BlockSize, r1 = std::min(rows, r0 + kFp8BlockSize);
      for (int64_t bj = 0; bj < bc; ++bj) {
        const float scale = scale_inv[bi * bc + bj];
        for (int c = 0; c < 256; ++c) lut[c] = float_to_bf16(table[c] * scale);
        const int64_t c0 = bj * kFp8BlockSize, c1 = std::min(cols, c0 + kFp8BlockSize);
        for (int64_t i = r0; i < r1; ++i) {
          const uint8_t* qrow = q + i * cols;
          uint16_t* orow = out_bf16 + i * cols;
          for (int64_t j = c0; j < c1; ++j) orow[j] = lut[qrow[j]];
        }
      }
    }
  };
  // Large matrices (DeepSeek-V3 has thousands of them) are split over cores by block rows.
  const int64_t elements = rows * cols;
  const int64_t threads = std::min<int64_t>(
      {static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency())), br,
       std::max<int64_t>(1, elements / (int64_t{1} << 20))});
  if (threads <= 1) {
    do_block_rows(0, br);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t per = (br + threads - 1) / threads;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t b0 = t * per, b1 = std::min(br, b0 + per);
    if (b0 < b1) pool.emplace_back(do_block_rows, b0, b1);
  }
  for (auto& th : pool) th.join();
}

}  // namespace dsft::io
