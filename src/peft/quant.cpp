// NF4 and int8 quantisation of frozen base weights, in plain ATen ops so that the same code runs
// on the CPU and on a GPU. The NF4 format mirrors bitsandbytes (see quant.h).
#include "dsft/peft/quant.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <string>

#include "dsft/util/error.h"
#include "peft/quant_internal.h"

namespace dsft::peft {

// Checked against bitsandbytes: bitsandbytes/functional.py get_4bit_type("nf4") and the
// dDequantizeNF4 / dQuantizeNF4 trees in csrc/kernels.cu (bitsandbytes-foundation/bitsandbytes).
const std::array<float, 16> kNf4Code = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// The literals of bitsandbytes' dQuantizeNF4 (csrc/kernels.cu), ascending; each is the midpoint of
// two neighbouring code values, compared with `x > threshold` there.
const std::array<float, 15> kNf4Thresholds = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
};

namespace {

// Small constant tables, built once per device: dequantisation runs per layer per step, and a
// host-to-device copy there each time would stall the stream.
at::Tensor cached_table(const std::string& name, const at::Device& device, at::Tensor (*build)()) {
  static std::mutex mutex;
  static std::map<std::string, at::Tensor> cache;
  std::lock_guard<std::mutex> lock(mutex);
  std::string key = name + "@" + device.str();
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  at::Tensor t = build().to(device);
  cache.emplace(key, t);
  return t;
}

at::Tensor build_nf4_code() {
  return at::tensor(std::vector<float>(kNf4Code.begin(), kNf4Code.end()), at::kFloat);
}

at::Tensor build_nf4_thresholds() {
  return at::tensor(std::vector<float>(kNf4Thresholds.begin(), kNf4Thresholds.end()), at::kFloat);
}

// As bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each
// exponent i, 2^i evenly spaced fractions in (0.1, 1] scaled by 10^(i-6), both signs, plus 0 and 1.
// The arithmetic is float32 as there (torch.linspace and a float32 tensor times a Python float).
at::Tensor build_dynamic_map() {
  std::vector<float> data;
  const int max_exponent_bits = 7;
  const int non_sign_bits = 7;
  for (int i = 0; i < max_exponent_bits; ++i) {
    int64_t fraction_items = (int64_t{1} << (i + non_sign_bits - max_exponent_bits)) + 1;
    at::Tensor boundaries = at::linspace(0.1, 1.0, fraction_items, at::kFloat);
    at::Tensor means = (boundaries.slice(0, 0, -1) + boundaries.slice(0, 1)) / 2.0;
    double scale = std::pow(10.0, -(max_exponent_bits - 1) + i);
    at::Tensor pos = (means * scale).contiguous();
    at::Tensor neg = (means * -scale).contiguous();
    const float* p = pos.data_ptr<float>();
    const float* n = neg.data_ptr<float>();
    data.insert(data.end(), p, p + pos.numel());
    data.insert(data.end(), n, n + neg.numel());
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  at::Tensor map = at::tensor(data, at::kFloat);
  return std::get<0>(map.sort());
}

// Midpoints between neighbouring map values: bucketize against them finds the nearest value.
at::Tensor build_dynamic_midpoints() {
  at::Tensor map = build_dynamic_map();
  return ((map.slice(0, 0, -1) + map.slice(0, 1)) / 2.0).contiguous();
}

void check_float(const at::Tensor& t, const char* what) {
  if (!t.defined() || t.numel() == 0) {
    throw dsft::Error(std::string("cannot quantise ") + what + ": the tensor is empty");
  }
  if (!c10::isFloatingType(t.scalar_type())) {
    throw dsft::Error(std::string("cannot quantise ") + what + ": expected a floating tensor (got " +
                      c10::toString(t.scalar_type()) + ")");
  }
}

void check_finite(const at::Tensor& flat, const char* what) {
  if (!at::isfinite(flat).all().item<bool>()) {
    throw dsft::Error(std::string("cannot quantise ") + what +
                      ": it holds NaN or infinite values; check the checkpoint it came from");
  }
}

// 1 / absmax per block, 0 for an all-zero block (whose values then land on the code for 0).
at::Tensor safe_reciprocal(const at::Tensor& absmax) {
  return at::where(absmax > 0, absmax.reciprocal(), at::zeros_like(absmax));
}

uint8_t nf4_code_of(float x) {
  uint8_t code = 0;
  for (float t : kNf4Thresholds) code += x > t;
  return code;
}

}  // namespace

namespace detail {

// The CPU path of nf4_quantize, one pass per block (the ATen formulation costs several passes
// and a binary search per element there). Same arithmetic: x * (1 / absmax) in float32, code =
// number of thresholds below it; a missing last element of an odd-sized tensor packs as code 7.
void nf4_quantize_cpu(const at::Tensor& flat, int64_t block_size, at::Tensor* packed_out,
                      at::Tensor* absmax_out) {
  const int64_t n = flat.numel();
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  at::Tensor packed = at::empty({(n + 1) / 2}, flat.options().dtype(at::kByte));
  at::Tensor absmax = at::empty({n_blocks}, flat.options());
  const float* x = flat.data_ptr<float>();
  uint8_t* p = packed.data_ptr<uint8_t>();
  float* a = absmax.data_ptr<float>();
  std::atomic<bool> finite{true};
  at::parallel_for(0, n_blocks, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t s = b * block_size, e = std::min(n, s + block_size);
      float amax = 0.0f;
      bool ok = true;
      for (int64_t i = s; i < e; ++i) {
        ok &= std::isfinite(x[i]);
        amax = std::max(amax, std::fabs(x[i]));
      }
      if (!ok) finite = false;
      a[b] = amax;
      const float inv = amax > 0.0f ? 1.0f / amax : 0.0f;
      for (int64_t i = s; i < e; i += 2) {
        const uint8_t hi = nf4_code_of(x[i] * inv);
        const uint8_t lo = i + 1 < e ? nf4_code_of(x[i + 1] * inv) : 7;
        p[i / 2] = static_cast<uint8_t>(hi << 4 | lo);
      }
    }
  });
  if (!finite) {
    throw dsft::Error(
        "cannot quantise a weight to NF4: it holds NaN or infinite values; check the "
        "checkpoint it came from");
  }
  *packed_out = packed;
  *absmax_out = absmax;
}

// The CPU path of nf4_dequantize_range for whole blocks [b0, b1) into float32 `out`.
void nf4_dequantize_blocks_cpu(const Nf4Weight& q, int64_t b0, int64_t b1, const float* scales, float* out) {
  const uint8_t* p = q.packed.data_ptr<uint8_t>();
  const int64_t bs = q.block_size;
  at::parallel_for(b0, b1, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t b = c0; b < c1; ++b) {
      const float scale = scales[b - b0];
      const int64_t s = b * bs, e = std::min(q.numel, s + bs);
      float* o = out + (s - b0 * bs);
      for (int64_t i = s; i < e; i += 2) {
        const uint8_t byte = p[i / 2];
        o[i - s] = kNf4Code[byte >> 4] * scale;
        if (i + 1 < e) o[i - s + 1] = kNf4Code[byte & 0x0F] * scale;
      }
    }
  });
}

void nf4_quantize_generic(const at::Tensor& flat, int64_t block_size, at::Tensor* packed_out,
                          at::Tensor* absmax_out) {
  check_finite(flat, "a weight to NF4");
  const int64_t n = flat.numel();
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  const int64_t pad = n_blocks * block_size - n;
  at::Tensor blocks = (pad ? at::cat({flat, at::zeros({pad}, flat.options())}) : flat)
                          .view({n_blocks, block_size});  // [n_blocks, block_size]
  at::Tensor absmax = blocks.abs().amax({1});             // [n_blocks]
  // bitsandbytes multiplies by the reciprocal rather than dividing; so do we, for equal codes.
  at::Tensor normed = blocks * safe_reciprocal(absmax).unsqueeze(1);
  at::Tensor thresholds = cached_table("nf4_thresholds", flat.device(), build_nf4_thresholds);
  at::Tensor codes = at::bucketize(normed, thresholds, /*out_int32=*/true, /*right=*/false)
                         .to(at::kByte)
                         .view({-1, 2});  // [n_blocks * block_size / 2, 2]
  at::Tensor packed = at::bitwise_or(codes.select(1, 0).bitwise_left_shift(4), codes.select(1, 1));
  *packed_out = packed.slice(0, 0, (n + 1) / 2).clone();
  *absmax_out = absmax;
}

at::Tensor nf4_decode_generic(const Nf4Weight& q, int64_t b0, int64_t b1, const at::Tensor& scales) {
  const int64_t bs = q.block_size;
  const int64_t start = b0 * bs;  // even, as the block size is
  const int64_t span = (b1 - b0) * bs;
  at::Tensor bytes = q.packed.slice(0, start / 2, std::min<int64_t>(start + span, q.numel + 1) / 2);
  at::Tensor codes = at::stack({bytes.bitwise_right_shift(4), bytes.bitwise_and(0x0F)}, 1)
                         .reshape({-1})
                         .to(at::kInt);  // [2 * bytes]
  if (codes.numel() < span) {
    // The tail block of a tensor whose size is not a block multiple: decode as zeros.
    codes = at::cat({codes, at::full({span - codes.numel()}, 7, codes.options())});
  }
  at::Tensor table = cached_table("nf4_code", q.packed.device(), build_nf4_code);
  at::Tensor values = table.index_select(0, codes).view({b1 - b0, bs});  // [blocks, block_size]
  return (values * scales.unsqueeze(1)).reshape({-1}).slice(0, 0, std::min(span, q.numel - start));
}

at::Tensor nf4_decode_cpu(const Nf4Weight& q, int64_t b0, int64_t b1, const at::Tensor& scales) {
  const int64_t start = b0 * q.block_size;
  at::Tensor out = at::empty({std::min((b1 - b0) * q.block_size, q.numel - start)}, scales.options());
  nf4_dequantize_blocks_cpu(q, b0, b1, scales.data_ptr<float>(), out.data_ptr<float>());
  return out;
}

}  // namespace detail

at::Tensor dynamic_map_8bit() {
  return build_dynamic_map();
}

int64_t Nf4Weight::nbytes() const {
  int64_t bytes = packed.defined() ? packed.numel() : 0;
  if (double_quant) {
    bytes += qabsmax.numel() + absmax2.numel() * 4 + 4;
  } else if (absmax.defined()) {
    bytes += absmax.numel() * 4;
  }
  return bytes;
}

at::Tensor Nf4Weight::block_absmax(int64_t begin, int64_t end) const {
  if (!double_quant) return absmax.slice(0, begin, end);
  at::Tensor map = cached_table("dynamic8", qabsmax.device(), build_dynamic_map);
  at::Tensor values = map.index_select(0, qabsmax.slice(0, begin, end).to(at::kInt));
  at::Tensor outer = at::arange(begin, end, qabsmax.options().dtype(at::kLong)).div(dq_block_size, "floor");
  return values * absmax2.index_select(0, outer) + absmax_offset;
}

Nf4Weight Nf4Weight::to(const at::Device& device, bool non_blocking) const {
  Nf4Weight out = *this;
  auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device, non_blocking) : t; };
  out.packed = move(packed);
  out.absmax = move(absmax);
  out.qabsmax = move(qabsmax);
  out.absmax2 = move(absmax2);
  return out;
}

Nf4Weight nf4_quantize(const at::Tensor& weight, const Nf4Options& options) {
  check_float(weight, "a weight to NF4");
  if (options.block_size <= 0 || options.block_size % 2 != 0) {
    throw dsft::Error("NF4 block size must be a positive even number (got " +
                      std::to_string(options.block_size) + "); bitsandbytes uses 64");
  }
  if (options.double_quant && options.dq_block_size <= 0) {
    throw dsft::Error("NF4 double-quantisation block size must be positive (got " +
                      std::to_string(options.dq_block_size) + "); QLoRA uses 256");
  }
  at::NoGradGuard no_grad;
  at::Tensor flat = weight.detach().reshape({-1}).to(at::kFloat).contiguous();

  Nf4Weight q;
  q.shape = weight.sizes().vec();
  q.numel = flat.numel();
  q.block_size = options.block_size;
  const int64_t n_blocks = q.n_blocks();
  at::Tensor absmax;  // [n_blocks]
  if (flat.device().is_cpu()) {
    detail::nf4_quantize_cpu(flat, q.block_size, &q.packed, &absmax);
  } else {
    detail::nf4_quantize_generic(flat, q.block_size, &q.packed, &absmax);
  }

  q.double_quant = options.double_quant;
  q.dq_block_size = options.dq_block_size;
  if (!options.double_quant) {
    q.absmax = absmax.contiguous();
    return q;
  }
  // QLoRA double quantisation: the absmax values are all positive, so centre them on their mean
  // first to use the signed 8-bit map's range, then quantise blockwise with their own absmax.
  q.absmax_offset = absmax.mean().item<float>();
  at::Tensor centred = absmax - q.absmax_offset;
  const int64_t n_outer = (n_blocks + q.dq_block_size - 1) / q.dq_block_size;
  const int64_t pad2 = n_outer * q.dq_block_size - n_blocks;
  at::Tensor outer = (pad2 ? at::cat({centred, at::zeros({pad2}, centred.options())}) : centred)
                         .view({n_outer, q.dq_block_size});  // [n_outer, dq_block_size]
  at::Tensor absmax2 = outer.abs().amax({1});                // [n_outer]
  at::Tensor normed2 = outer * safe_reciprocal(absmax2).unsqueeze(1);
  at::Tensor mids = cached_table("dynamic8_mid", flat.device(), build_dynamic_midpoints);
  q.qabsmax = at::bucketize(normed2, mids, /*out_int32=*/true, /*right=*/false)
                  .to(at::kByte)
                  .reshape({-1})
                  .slice(0, 0, n_blocks)
                  .clone();
  q.absmax2 = absmax2.contiguous();
  return q;
}

at::Tensor nf4_dequantize_range(const Nf4Weight& q, int64_t begin, int64_t end, at::ScalarType dtype) {
  if (begin < 0 || end > q.numel || begin > end) {
    throw dsft::Error("NF4 dequantisation range [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") is outside the tensor of " + std::to_string(q.numel) + " elements");
  }
  at::NoGradGuard no_grad;
  if (begin == end) return at::empty({0}, q.packed.options().dtype(dtype));
  const int64_t bs = q.block_size;
  const int64_t b0 = begin / bs;
  const int64_t b1 = (end + bs - 1) / bs;
  const int64_t start = b0 * bs;
  at::Tensor scales = q.block_absmax(b0, b1).contiguous();  // [blocks]
  at::Tensor decoded = q.packed.device().is_cpu() ? detail::nf4_decode_cpu(q, b0, b1, scales)
                                                  : detail::nf4_decode_generic(q, b0, b1, scales);
  return decoded.slice(0, begin - start, end - start).to(dtype);
}

at::Tensor nf4_dequantize(const Nf4Weight& q, at::ScalarType dtype) {
  return nf4_dequantize_range(q, 0, q.numel, dtype).view(q.shape);
}

int64_t Int8Weight::nbytes() const {
  return (q.defined() ? q.numel() : 0) + (scale.defined() ? scale.numel() * 4 : 0);
}

Int8Weight Int8Weight::to(const at::Device& device, bool non_blocking) const {
  return Int8Weight{q.to(device, non_blocking), scale.to(device, non_blocking)};
}

Int8Weight int8_quantize(const at::Tensor& weight) {
  check_float(weight, "a weight to int8");
  if (weight.dim() != 2) {
    throw dsft::Error("int8 quantisation takes a 2-D [out, in] weight (got " + std::to_string(weight.dim()) +
                      " dimensions)");
  }
  at::NoGradGuard no_grad;
  at::Tensor w = weight.detach().to(at::kFloat);
  check_finite(w, "a weight to int8");
  at::Tensor absmax = w.abs().amax({1});  // [rows]
  at::Tensor inv = at::where(absmax > 0, 127.0 / absmax, at::zeros_like(absmax));
  Int8Weight q;
  q.q = at::round(w * inv.unsqueeze(1)).clamp(-127, 127).to(at::kChar).contiguous();
  q.scale = (absmax / 127.0).contiguous();
  return q;
}

at::Tensor int8_dequantize_rows(const Int8Weight& q, int64_t begin, int64_t end, at::ScalarType dtype) {
  if (begin < 0 || end > q.q.size(0) || begin > end) {
    throw dsft::Error("int8 dequantisation rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") are outside the weight of " + std::to_string(q.q.size(0)) + " rows");
  }
  at::NoGradGuard no_grad;
  at::Tensor rows = q.q.slice(0, begin, end).to(at::kFloat);
  return (rows * q.scale.slice(0, begin, end).unsqueeze(1)).to(dtype);
}

at::Tensor int8_dequantize(const Int8Weight& q, at::ScalarType dtype) {
  return int8_dequantize_rows(q, 0, q.q.size(0), dtype);
}

}  // namespace dsft::peft
