// RoPE frequencies against the numbers in MODEL-FACTS and HF's formulas.
#include "dsft/model/rope.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dsft::model;

TEST(Rope, YarnRampMatchesReferenceRange) {
  // d 64, base 10000, f 40, L 4096: low 10, high 23 -> dims < 10 kept, dims >= 23 divided by 40.
  RopeScaling s;
  s.type = RopeType::yarn;
  s.factor = 40;
  s.original_max_position_embeddings = 4096;
  auto inv = rope_inv_freq(64, 10000, s, 163840, 0);
  for (int i = 0; i < 32; ++i) {
    const double plain = 1.0 / std::pow(10000.0, 2.0 * i / 64);
    if (i <= 10) {
      EXPECT_DOUBLE_EQ(inv[i], plain) << i;
    }
    if (i >= 23) {
      EXPECT_DOUBLE_EQ(inv[i], plain / 40) << i;
    }
    if (i > 10 && i < 23) {
      EXPECT_LT(inv[i], plain);
      EXPECT_GT(inv[i], plain / 40);
    }
  }
  EXPECT_NEAR(yarn_mscale(40, 0.707), 0.1 * 0.707 * std::log(40.0) + 1, 1e-12);
}

TEST(Rope, Llama3AndLinear) {
  RopeScaling s;
  s.type = RopeType::llama3;
  s.factor = 8;
  s.low_freq_factor = 1;
  s.high_freq_factor = 4;
  s.original_max_position_embeddings = 8192;
  auto inv = rope_inv_freq(128, 500000, s, 131072, 0);
  const double plain0 = 1.0, plain_last = 1.0 / std::pow(500000.0, 126.0 / 128);
  EXPECT_DOUBLE_EQ(inv[0], plain0);           // short wavelength: unchanged
  EXPECT_DOUBLE_EQ(inv[63], plain_last / 8);  // long wavelength: divided by factor
  s = RopeScaling{};
  s.type = RopeType::linear;
  s.factor = 4;
  auto lin = rope_inv_freq(16, 100000, s, 0, 0);
  EXPECT_DOUBLE_EQ(lin[1], 1.0 / std::pow(100000.0, 2.0 / 16) / 4);
}

TEST(Rope, DynamicGrowsBaseOnlyPastMaxLength) {
  RopeScaling s;
  s.type = RopeType::dynamic;
  s.factor = 2;
  auto short_inv = rope_inv_freq(16, 10000, s, 100, 50);
  auto long_inv = rope_inv_freq(16, 10000, s, 100, 400);
  EXPECT_DOUBLE_EQ(short_inv[3], 1.0 / std::pow(10000.0, 6.0 / 16));
  const double base = 10000 * std::pow(2.0 * 400 / 100 - 1.0, 16.0 / 14);
  EXPECT_NEAR(long_inv[3], 1.0 / std::pow(base, 6.0 / 16), 1e-15);
}

TEST(Rope, LayoutsRotatePairsAndPreserveNorm) {
  Rope half(RopeOptions(8, 10000).layout(RopeLayout::rotate_half));
  Rope inter(RopeOptions(8, 10000).layout(RopeLayout::interleaved));
  auto x = torch::randn({1, 2, 5, 8});
  auto pos = torch::arange(5).unsqueeze(0);
  auto th = half.tables(pos);
  auto a = half.apply(x, th);
  auto b = inter.apply(x, inter.tables(pos));
  // rotations keep each pair's norm, so the vector norm too
  EXPECT_TRUE(torch::allclose(a.norm(2, -1), x.norm(2, -1), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(b.norm(2, -1), x.norm(2, -1), 1e-5, 1e-5));
  // interleaved on x equals rotate-half on x with the pairs de-interleaved
  auto perm = torch::tensor({0, 2, 4, 6, 1, 3, 5, 7});
  auto deint = x.index_select(-1, perm);
  EXPECT_TRUE(torch::allclose(half.apply(deint, th), b.index_select(-1, perm), 1e-5, 1e-6));
  // position 0 is the identity
  EXPECT_TRUE(torch::allclose(a.select(2, 0), x.select(2, 0)));
}
