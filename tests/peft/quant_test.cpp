// NF4 and int8 quantisation: code book, packed layout and absmax against a straightforward
// scalar implementation, round-trip error bounds, double quantisation, storage size.
#include "dsft/peft/quant.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "dsft/util/error.h"
#include "peft/quant_internal.h"

namespace dsft::peft {
namespace {

// The published NF4 values, typed in again from the QLoRA paper (appendix E) rather than taken
// from the library under test.
const double kPublishedNf4[16] = {-1.0,
                                  -0.6961928009986877,
                                  -0.5250730514526367,
                                  -0.39491748809814453,
                                  -0.28444138169288635,
                                  -0.18477343022823334,
                                  -0.09105003625154495,
                                  0.0,
                                  0.07958029955625534,
                                  0.16093020141124725,
                                  0.24611230194568634,
                                  0.33791524171829224,
                                  0.44070982933044434,
                                  0.5626170039176941,
                                  0.7229568362236023,
                                  1.0};

// Reference: scan the code book for the nearest value (ties to the lower code), pack two codes
// per byte with the first in the high nibble, one float absmax per block.
struct RefNf4 {
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
};

RefNf4 reference_nf4(const std::vector<float>& w, int64_t block) {
  RefNf4 out;
  const int64_t n = static_cast<int64_t>(w.size());
  std::vector<uint8_t> codes(n);
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t b1 = std::min(n, b0 + block);
    float amax = 0.0f;
    for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(w[i]));
    out.absmax.push_back(amax);
    const float inv = amax > 0 ? 1.0f / amax : 0.0f;
    for (int64_t i = b0; i < b1; ++i) {
      const float x = w[i] * inv;
      int best = 0;
      for (int c = 1; c < 16; ++c) {
        if (std::fabs(x - static_cast<float>(kPublishedNf4[c])) <
            std::fabs(x - static_cast<float>(kPublishedNf4[best]))) {
          best = c;
        }
      }
      codes[i] = static_cast<uint8_t>(best);
    }
  }
  for (int64_t i = 0; i < n; i += 2) {
    const uint8_t lo = i + 1 < n ? codes[i + 1] : 7;  // a missing last element packs as 0.0
    out.packed.push_back(static_cast<uint8_t>(codes[i] << 4 | lo));
  }
  return out;
}

std::vector<float> to_vector(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat32).contiguous().reshape({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(Nf4, CodeBookIsThePublishedOne) {
  for (int i = 0; i < 16; ++i) EXPECT_EQ(kNf4Code[i], static_cast<float>(kPublishedNf4[i])) << i;
  // Each threshold lies between its two neighbours, near their midpoint.
  for (int i = 0; i < 15; ++i) {
    EXPECT_GT(kNf4Thresholds[i], kNf4Code[i]);
    EXPECT_LT(kNf4Thresholds[i], kNf4Code[i + 1]);
    EXPECT_NEAR(kNf4Thresholds[i], (kNf4Code[i] + kNf4Code[i + 1]) / 2, 1e-7);
  }
}

TEST(Nf4, EveryCodeBookValueRoundTripsExactly) {
  for (float scale : {1.0f, 0.0123f, 3.5f, 250.0f}) {
    std::vector<float> values;
    for (int rep = 0; rep < 4; ++rep) {
      for (int i = 0; i < 16; ++i) values.push_back(kNf4Code[(i + rep * 5) % 16] * scale);
    }
    torch::Tensor w = torch::tensor(values).view({4, 16});
    Nf4Weight q = nf4_quantize(w, {/*block_size=*/64});
    torch::Tensor back = nf4_dequantize(q);
    EXPECT_TRUE(torch::equal(back, w)) << "scale " << scale;
    // Codes are the indices themselves: the first byte holds codes 0 and 1 for rep 0.
    EXPECT_EQ(q.packed[0].item<int>(), 0x01);
    EXPECT_EQ(q.packed[7].item<int>(), 0xEF);
  }
}

TEST(Nf4, PackedLayoutAndAbsmaxMatchTheReference) {
  torch::manual_seed(1);
  // Odd element count, not a block multiple: exercises the padded tail block and half byte.
  for (int64_t n : {int64_t{64}, int64_t{4096}, int64_t{1003}}) {
    torch::Tensor w = torch::randn({n}) * 0.02;
    for (int64_t block : {int64_t{64}, int64_t{128}}) {
      Nf4Weight q = nf4_quantize(w, {block});
      RefNf4 ref = reference_nf4(to_vector(w), block);
      ASSERT_EQ(q.packed.numel(), static_cast<int64_t>(ref.packed.size()));
      ASSERT_EQ(q.absmax.numel(), static_cast<int64_t>(ref.absmax.size()));
      const uint8_t* p = q.packed.data_ptr<uint8_t>();
      int mismatches = 0;
      for (size_t i = 0; i < ref.packed.size(); ++i) mismatches += p[i] != ref.packed[i];
      EXPECT_EQ(mismatches, 0) << "n " << n << " block " << block;
      EXPECT_EQ(to_vector(q.absmax), ref.absmax);
    }
  }
}

// The one-pass CPU loop and the ATen formulation (used on GPUs) give the same bytes.
TEST(Nf4, CpuLoopAndAtenPathAgree) {
  torch::manual_seed(6);
  for (int64_t n : {int64_t{2}, int64_t{1003}, int64_t{64 * 40}}) {
    torch::Tensor w = torch::randn({n}) * 0.1;
    w[0] = 0.0;
    for (int64_t block : {int64_t{64}, int64_t{256}}) {
      torch::Tensor p1, a1, p2, a2;
      detail::nf4_quantize_cpu(w, block, &p1, &a1);
      detail::nf4_quantize_generic(w, block, &p2, &a2);
      EXPECT_TRUE(torch::equal(p1, p2)) << n << " " << block;
      EXPECT_TRUE(torch::equal(a1, a2)) << n << " " << block;
      Nf4Weight q = nf4_quantize(w, {block});
      const int64_t nb = q.n_blocks();
      for (auto r : std::vector<std::pair<int64_t, int64_t>>{{0, nb}, {nb - 1, nb}, {0, (nb + 1) / 2}}) {
        torch::Tensor scales = q.block_absmax(r.first, r.second);
        EXPECT_TRUE(torch::equal(detail::nf4_decode_cpu(q, r.first, r.second, scales),
                                 detail::nf4_decode_generic(q, r.first, r.second, scales)))
            << n << " blocks " << r.first << ".." << r.second;
      }
    }
  }
  torch::Tensor p, a;
  EXPECT_THROW(detail::nf4_quantize_generic(torch::tensor({1.0f, INFINITY}), 64, &p, &a), dsft::Error);
  EXPECT_THROW(detail::nf4_quantize_cpu(torch::tensor({1.0f, NAN, 2.0f}), 64, &p, &a), dsft::Error);
}

TEST(Nf4, ValuesOnAThresholdTakeTheLowerCode) {
  std::vector<float> values(64, 0.0f);
  values[0] = 1.0f;  // absmax 1: the normalised values are the values themselves
  for (int i = 0; i < 15; ++i) {
    values[1 + 2 * i] = kNf4Thresholds[i];
    values[2 + 2 * i] = std::nextafter(kNf4Thresholds[i], 2.0f);
  }
  Nf4Weight q = nf4_quantize(torch::tensor(values), {64});
  torch::Tensor back = nf4_dequantize(q);
  for (int i = 0; i < 15; ++i) {
    EXPECT_EQ(back[1 + 2 * i].item<float>(), kNf4Code[i]) << "threshold " << i;
    EXPECT_EQ(back[2 + 2 * i].item<float>(), kNf4Code[i + 1]) << "above threshold " << i;
  }
}

TEST(Nf4, RandomRoundTripWithinHalfTheLargestGap) {
  torch::manual_seed(2);
  torch::Tensor w = torch::randn({96, 200});
  w[3][7] = 40.0;  // an outlier only spoils its own block
  Nf4Weight q = nf4_quantize(w);
  torch::Tensor back = nf4_dequantize(q);
  ASSERT_EQ(back.sizes(), w.sizes());
  double max_gap = 0;
  for (int i = 0; i < 15; ++i) max_gap = std::max<double>(max_gap, kNf4Code[i + 1] - kNf4Code[i]);
  torch::Tensor err = (back - w).abs().reshape({-1}).view({-1, 64});
  torch::Tensor bound = q.absmax.unsqueeze(1) * (max_gap / 2) * (1 + 1e-6);
  EXPECT_TRUE((err <= bound).all().item<bool>());
  // Typical error for Gaussian weights is far below the worst case.
  double rel = ((back - w).norm() / w.norm()).item<double>();
  EXPECT_LT(rel, 0.12);
  EXPECT_GT(rel, 0.01);
}

TEST(Nf4, RangeDequantisationAgreesWithTheWhole) {
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({1003});
  Nf4Weight q = nf4_quantize(w, {64, /*double_quant=*/true});
  torch::Tensor whole = nf4_dequantize(q);
  for (auto r :
       std::vector<std::pair<int64_t, int64_t>>{{0, 1003}, {1, 2}, {63, 130}, {1000, 1003}, {5, 5}}) {
    torch::Tensor part = nf4_dequantize_range(q, r.first, r.second);
    EXPECT_TRUE(torch::equal(part, whole.slice(0, r.first, r.second))) << r.first << ".." << r.second;
  }
  EXPECT_THROW(nf4_dequantize_range(q, 0, 1004), dsft::Error);
}

TEST(Nf4, DynamicMapIsBitsandbytesOne) {
  torch::Tensor m = dynamic_map_8bit();
  ASSERT_EQ(m.numel(), 256);
  // Values printed by bitsandbytes' create_dynamic_map() under torch.
  EXPECT_EQ(m[0].item<float>(), -0.992968738079071f);
  EXPECT_EQ(m[1].item<float>(), -0.9789062142372131f);
  EXPECT_EQ(m[63].item<float>(), -0.10703125596046448f);
  EXPECT_EQ(m[126].item<float>(), -5.500000384017767e-07f);
  EXPECT_EQ(m[127].item<float>(), 0.0f);
  EXPECT_EQ(m[129].item<float>(), 3.250000190746505e-06f);
  EXPECT_EQ(m[200].item<float>(), 0.23359376192092896f);
  EXPECT_EQ(m[254].item<float>(), 0.992968738079071f);
  EXPECT_EQ(m[255].item<float>(), 1.0f);
}

TEST(Nf4, DoubleQuantisationKeepsAbsmaxClose) {
  torch::manual_seed(4);
  torch::Tensor w = torch::randn({512, 300}) * 0.05;
  Nf4Weight plain = nf4_quantize(w);
  Nf4Weight dq = nf4_quantize(w, {64, true, 256});
  ASSERT_TRUE(dq.double_quant);
  ASSERT_FALSE(dq.absmax.defined());
  EXPECT_EQ(dq.qabsmax.numel(), plain.absmax.numel());
  EXPECT_EQ(dq.absmax2.numel(), (plain.absmax.numel() + 255) / 256);
  // The codes do not depend on how absmax is stored.
  EXPECT_TRUE(torch::equal(dq.packed, plain.packed));
  torch::Tensor a = dq.block_absmax(0, dq.n_blocks());
  torch::Tensor expected_offset = plain.absmax.mean();
  EXPECT_FLOAT_EQ(dq.absmax_offset, expected_offset.item<float>());
  // Largest half-gap of the 8-bit map is 0.9/64/2 near ±1, times the block's range.
  torch::Tensor outer = torch::arange(a.numel()).div(256, "floor");
  torch::Tensor bound = dq.absmax2.index_select(0, outer) * 0.0071;
  EXPECT_TRUE(((a - plain.absmax).abs() <= bound).all().item<bool>());
  double rel = ((a - plain.absmax).abs() / plain.absmax).max().item<double>();
  EXPECT_LT(rel, 0.01);
  double werr = ((nf4_dequantize(dq) - nf4_dequantize(plain)).norm() / w.norm()).item<double>();
  EXPECT_LT(werr, 0.005);
}

TEST(Nf4, StorageIsAboutHalfAByteAParameter) {
  torch::Tensor w = torch::randn({1024, 1024});
  const double n = static_cast<double>(w.numel());
  Nf4Weight plain = nf4_quantize(w);
  EXPECT_EQ(plain.packed.numel(), w.numel() / 2);
  EXPECT_EQ(plain.packed.scalar_type(), torch::kByte);
  EXPECT_DOUBLE_EQ(plain.nbytes() / n, 0.5 + 4.0 / 64);
  Nf4Weight dq = nf4_quantize(w, {64, true});
  EXPECT_LT(dq.nbytes() / n, 0.5 + 1.0 / 64 + 0.0003);
}

TEST(Nf4, RejectsBadInput) {
  EXPECT_THROW(nf4_quantize(torch::tensor({1.0f, NAN})), dsft::Error);
  EXPECT_THROW(nf4_quantize(torch::randn({4}), {63}), dsft::Error);
  EXPECT_THROW(nf4_quantize(torch::empty({0})), dsft::Error);
  EXPECT_THROW(nf4_quantize(torch::ones({4}, torch::kLong)), dsft::Error);
}

TEST(Nf4, ZeroBlocksDecodeToZero) {
  torch::Tensor w = torch::zeros({128});
  w[70] = 0.5;
  Nf4Weight q = nf4_quantize(w, {64, true});
  EXPECT_TRUE(torch::equal(nf4_dequantize(q), w));
}

TEST(Int8, RoundTripWithinHalfAStep) {
  torch::manual_seed(5);
  torch::Tensor w = torch::randn({33, 70}) * 0.1;
  w[4].zero_();
  Int8Weight q = int8_quantize(w);
  ASSERT_EQ(q.q.scalar_type(), torch::kChar);
  EXPECT_EQ(q.nbytes(), 33 * 70 + 33 * 4);
  torch::Tensor back = int8_dequantize(q);
  torch::Tensor err = (back - w).abs();
  EXPECT_TRUE((err <= q.scale.unsqueeze(1) * 0.5 * (1 + 1e-5) + 1e-12).all().item<bool>());
  // The largest magnitude of each row maps to ±127 exactly.
  torch::Tensor qmax = q.q.to(torch::kInt).abs().amax({1});
  EXPECT_EQ(qmax[0].item<int>(), 127);
  EXPECT_EQ(qmax[4].item<int>(), 0);
  EXPECT_TRUE(torch::equal(back[4], torch::zeros({70})));
  EXPECT_TRUE(torch::allclose(int8_dequantize_rows(q, 10, 20), back.slice(0, 10, 20)));
  EXPECT_THROW(int8_quantize(torch::randn({4})), dsft::Error);
}

}  // namespace
}  // namespace dsft::peft
