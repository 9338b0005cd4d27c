// Narrow float formats and DeepSeek-V3's block-scaled FP8 weights: e4m3fn decoding of all 256
// codes against an independent table, round-to-nearest-even encoders, and checkpoints whose
// F8_E4M3 weights come back as BF16 through Checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "io/test_util.h"

namespace fs = std::filesystem;
using namespace dsft::io;
using dsft::io::test::TempDir;

namespace {

// e4m3fn from its definition, in double: sign, 4 exponent bits (bias 7), 3 mantissa bits;
// exponent 0 is subnormal; S.1111.111 is NaN; there is no infinity.
double e4m3_reference(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  double v;
  if (e == 15 && m == 7) return std::nan("");
  if (e == 0)
    v = std::ldexp(m / 8.0, -6);
  else
    v = std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -v : v;
}

uint16_t bf16_reference(double x) {
  // Nearest bf16 by search over the two neighbours, ties to even (finite, in-range values only).
  float f = static_cast<float>(x);  // exact for the products used here (<= 24 significant bits)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
  float flo, fhi;
  std::memcpy(&flo, &lo, 4);
  std::memcpy(&fhi, &hi, 4);
  const double dlo = std::fabs(x - flo), dhi = std::fabs(fhi - x);
  if (dlo < dhi) return static_cast<uint16_t>(lo >> 16);
  if (dhi < dlo) return static_cast<uint16_t>(hi >> 16);
  return static_cast<uint16_t>(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

}  // namespace

TEST(SafetensorsFp8, DecodesAll256E4m3Codes) {
  for (int c = 0; c < 256; ++c) {
    const double want = e4m3_reference(c);
    const float got = fp8_e4m3_to_float(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << c;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << "code " << c;
      EXPECT_EQ(std::signbit(got), c >= 128) << c;
    }
  }
  EXPECT_EQ(fp8_e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0xFE), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(fp8_e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_to_float(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x78), 256.0f);  // not infinity: e4m3fn keeps exponent 15
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0xFF)));
}

TEST(SafetensorsFp8, EncodesToNearestEvenAndSaturates) {
  // Every code survives decode + encode.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;
    EXPECT_EQ(float_to_fp8_e4m3(fp8_e4m3_to_float(static_cast<uint8_t>(c))), c) << c;
  }
  // Between neighbours a < b: below the midpoint -> a, above -> b, at it -> the even code.
  for (int c = 0; c < 0x7E; ++c) {
    const double a = e4m3_reference(c), b = e4m3_reference(c + 1);
    const double mid = (a + b) / 2;
    const float below = std::nextafter(static_cast<float>(mid), 0.0f);
    const float above = std::nextafter(static_cast<float>(mid), 1000.0f);
    EXPECT_EQ(float_to_fp8_e4m3(below), c) << c;
    EXPECT_EQ(float_to_fp8_e4m3(above), c + 1) << c;
    EXPECT_EQ(float_to_fp8_e4m3(static_cast<float>(mid)), (c % 2 == 0) ? c : c + 1) << c;
    EXPECT_EQ(float_to_fp8_e4m3(-static_cast<float>(mid)), 0x80 | ((c % 2 == 0) ? c : c + 1)) << c;
  }
  EXPECT_EQ(float_to_fp8_e4m3(448.0f), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(470.0f), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(1e30f), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(-INFINITY), 0xFE);
  EXPECT_EQ(float_to_fp8_e4m3(NAN), 0x7F);
  EXPECT_EQ(float_to_fp8_e4m3(std::ldexp(1.0f, -12)), 0x00);
  EXPECT_EQ(float_to_fp8_e4m3(-0.0f), 0x80);
}

TEST(SafetensorsFp8, Bf16Fp16E5m2Conversions) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie -> even
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie -> even
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_bf16(INFINITY), 0x7F80);
  EXPECT_EQ(float_to_bf16(3.4028235e38f), 0x7F80);  // rounds up past the largest bf16
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xC000), -2.0f);

  EXPECT_EQ(fp16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(fp16_to_float(0xFC00)));
  EXPECT_EQ(fp8_e5m2_to_float(0x3C), 1.0f);
  EXPECT_EQ(fp8_e5m2_to_float(0x7B), 57344.0f);
  EXPECT_EQ(fp8_e5m2_to_float(0x01), std::ldexp(1.0f, -16));
  EXPECT_TRUE(std::isinf(fp8_e5m2_to_float(0x7C)));
  EXPECT_TRUE(std::isnan(fp8_e5m2_to_float(0x7D)));
}

namespace {

// A random matrix of BF16-representable values, as DeepSeek's BF16 masters are.
std::vector<float> random_bf16_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& x : w) x = bf16_to_float(float_to_bf16(dist(rng)));
  // A few large and a few tiny values so blocks have different scales and subnormal codes occur.
  if (!w.empty()) {
    w[0] = 3.5f;
    w[w.size() / 2] = -1e-6f;
  }
  return w;
}

}  // namespace

TEST(SafetensorsFp8, BlockScaledCheckpointLoadsAsBf16) {
  TempDir tmp;
  struct Case {
    std::string name;
    int64_t rows, cols;
  };
  const std::vector<Case> cases = {{"model.layers.0.self_attn.q_a_proj.weight", 200, 300},
                                   {"model.layers.0.mlp.down_proj.weight", 128, 256},
                                   {"model.layers.0.mlp.up_proj.weight", 129, 1},
                                   {"model.layers.0.mlp.gate_proj.weight", 1, 1}};
  std::vector<std::vector<float>> masters;
  std::vector<std::vector<uint8_t>> qs;
  std::vector<std::vector<float>> scales;
  std::vector<TensorToWrite> ts;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    masters.push_back(random_bf16_matrix(c.rows, c.cols, 100 + static_cast<uint32_t>(i)));
    qs.emplace_back();
    scales.emplace_back();
    quantize_fp8_e4m3_blockwise(masters.back().data(), c.rows, c.cols, qs.back(), scales.back());
    const int64_t br = (c.rows + 127) / 128, bc = (c.cols + 127) / 128;
    ASSERT_EQ(scales.back().size(), static_cast<size_t>(br * bc));
    ts.push_back({c.name, DType::F8_E4M3, {c.rows, c.cols}, qs.back().data(), qs.back().size()});
    ts.push_back({c.name + "_scale_inv", DType::F32, {br, bc}, scales.back().data(),
                  scales.back().size() * 4});
  }
  std::vector<uint16_t> norm(300, 0x3F80);
  ts.push_back({"model.norm.weight", DType::BF16, {300}, norm.data(), 600});

  auto check = [&](const Checkpoint& ck) {
    const auto names = ck.names();
    ASSERT_EQ(names.size(), cases.size() + 1);
    for (const auto& n : names) EXPECT_EQ(n.find("_scale_inv"), std::string::npos) << n;
    EXPECT_FALSE(ck.contains(cases[0].name + "_scale_inv"));
    EXPECT_EQ(ck.at("model.norm.weight").dtype, DType::BF16);
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& c = cases[i];
      SCOPED_TRACE(c.name);
      const TensorView& v = ck.at(c.name);
      EXPECT_EQ(v.dtype, DType::BF16);
      EXPECT_EQ(v.shape, (std::vector<int64_t>{c.rows, c.cols}));
      ASSERT_EQ(v.nbytes, static_cast<size_t>(c.rows * c.cols * 2));
      const int64_t bc = (c.cols + 127) / 128;
      int subnormal_codes = 0;
      for (int64_t r = 0; r < c.rows; ++r)
        for (int64_t k = 0; k < c.cols; ++k) {
          const size_t idx = static_cast<size_t>(r * c.cols + k);
          uint16_t got;
          std::memcpy(&got, v.data + 2 * idx, 2);
          const float s = scales[i][static_cast<size_t>((r / 128) * bc + k / 128)];
          const uint8_t code = qs[i][idx];
          subnormal_codes += ((code >> 3) & 15) == 0 && (code & 7) != 0;
          // Exactly bf16(fp8 * scale), computed from the independent decoder.
          ASSERT_EQ(got, bf16_reference(e4m3_reference(code) * s)) << r << "," << k;
          // And close to the master weight: e4m3 keeps 3 mantissa bits.
          const float w = masters[i][idx];
          const float back = bf16_to_float(got);
          EXPECT_LE(std::fabs(back - w), std::fabs(w) / 16 + s * std::ldexp(1.0f, -10) +
                                             std::fabs(back) / 256 + 1e-30f)
              << r << "," << k;
        }
      if (i == 0) {
        EXPECT_GT(subnormal_codes, 0);
      }
    }
  };

  const auto single = tmp.path("single.safetensors");
  write_safetensors(single, ts);
  check(Checkpoint::open(single));

  // Sharded so that weights and their scales land in different files.
  const auto dir = tmp.path("sharded");
  write_sharded_safetensors(dir, ts, 20000);
  Checkpoint copy;
  {
    const Checkpoint ck = Checkpoint::open(dir);
    check(ck);
    copy = ck;  // the copy's owned BF16 views must stay valid after the original is gone
  }
  check(copy);
}

TEST(SafetensorsFp8, InconsistentScalesAreErrors) {
  TempDir tmp;
  std::vector<uint8_t> q(200 * 300, 0x38);
  std::vector<float> s(6, 1.0f);
  std::vector<uint16_t> bf(200 * 300, 0x3F80);
  auto expect_error = [&](std::vector<TensorToWrite> ts, std::vector<std::string> needles) {
    const auto path = tmp.path("fp8.safetensors");
    write_safetensors(path, ts);
    try {
      Checkpoint::open(path);
      ADD_FAILURE() << "expected an error";
    } catch (const dsft::Error& e) {
      for (const auto& n : needles)
        EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what() << " lacks " << n;
    }
  };
  // Scale grid of the wrong shape ([2, 3] is right for [200, 300]).
  expect_error({{"w", DType::F8_E4M3, {200, 300}, q.data(), q.size()},
                {"w_scale_inv", DType::F32, {3, 2}, s.data(), 24}},
               {"'w'", "w_scale_inv", "[2, 3]"});
  // A block scale beside a weight that is not FP8.
  expect_error({{"w", DType::BF16, {200, 300}, bf.data(), bf.size() * 2},
                {"w_scale_inv", DType::F32, {2, 3}, s.data(), 24}},
               {"'w_scale_inv'", "'w'", "BF16", "F8_E4M3"});
  // Block scales need a matrix.
  expect_error({{"w", DType::F8_E4M3, {2, 100, 300}, q.data(), q.size()},
                {"w_scale_inv", DType::F32, {2, 3}, s.data(), 24}},
               {"'w'", "3 dimensions"});
  // Scales of an integer dtype.
  expect_error({{"w", DType::F8_E4M3, {200, 300}, q.data(), q.size()},
                {"w_scale_inv", DType::I32, {2, 3}, s.data(), 24}},
               {"w_scale_inv", "I32"});

  // FP8 without a scale stays raw FP8: the caller decides what it means.
  const auto path = tmp.path("raw.safetensors");
  write_safetensors(path, {{"w", DType::F8_E4M3, {200, 300}, q.data(), q.size()}});
  const auto ck = Checkpoint::open(path);
  EXPECT_EQ(ck.at("w").dtype, DType::F8_E4M3);
}
