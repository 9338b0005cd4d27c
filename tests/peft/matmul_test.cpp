// The LoRA layer's products (dsft::peft::product / add_product_ / product_into) against fp64
// products of the same operands: every layout the layer uses (plain, transposed, sliced with a
// leading dimension), skinny and square shapes, the scale, accumulation into an existing output,
// fp32 outputs of bf16 operands; other dtypes equal torch::mm exactly.
#include "dsft/peft/matmul.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace dsft::peft {
namespace {

// |got - a·b| against the bf16 rounding of the result plus the fp32 accumulation error.
void expect_product(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const torch::Tensor err = (got.to(torch::kFloat64) - want).abs();
  const torch::Tensor bound = want.abs() * (1.0 / 128) + 1e-3;
  EXPECT_TRUE((err <= bound).all().item<bool>()) << what << ": max error " << err.max().item<double>()
                                                 << " at values up to " << want.abs().max().item<double>();
}

TEST(LoraMatmul, Bf16ProductsMatchFp64ForEveryLayout) {
  torch::manual_seed(3);
  struct Shape {
    int64_t m, k, n;
  };
  for (const Shape s : {Shape{456, 640, 16}, Shape{456, 16, 640}, Shape{16, 456, 640}, Shape{640, 456, 16},
                        Shape{1, 7, 1}, Shape{33, 65, 17}}) {
    const torch::Tensor a64 = torch::randn({s.m, s.k}, torch::kFloat64);
    const torch::Tensor b64 = torch::randn({s.k, s.n}, torch::kFloat64);
    const torch::Tensor a = a64.to(torch::kBFloat16), b = b64.to(torch::kBFloat16);
    // The operands as the layer holds them: plain, transposed views, and a column slice.
    const torch::Tensor at = a.t().contiguous().t(), bt = b.t().contiguous().t();
    const torch::Tensor wide = torch::cat({b, b}, 1).narrow(1, 0, s.n);  // leading dimension 2n
    const torch::Tensor want = torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64));
    const std::string name = std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n);
    expect_product(product(a, b), want, name + " plain");
    expect_product(product(at, b), want, name + " a transposed");
    expect_product(product(a, bt), want, name + " b transposed");
    expect_product(product(at, bt), want, name + " both transposed");
    expect_product(product(a, wide), want, name + " b with a leading dimension");
    expect_product(product(a, bt, 0.125), want * 0.125, name + " scaled");

    const torch::Tensor c0 = torch::randn({s.m, s.n}, torch::kFloat64).to(torch::kBFloat16);
    torch::Tensor c = c0.clone();
    add_product_(c, at, b, 2.0);
    expect_product(c, c0.to(torch::kFloat64) + want * 2.0, name + " accumulated");
  }
}

TEST(LoraMatmul, Fp32OutputsKeepTheFp32Sums) {
  torch::manual_seed(5);
  for (const auto& [m, k, n] :
       {std::tuple<int64_t, int64_t, int64_t>{16, 456, 640}, {16, 456, 17}, {3, 5, 7}}) {
    const std::string name = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
    const torch::Tensor a = torch::randn({k, m}, torch::kFloat64).to(torch::kBFloat16).t();  // as dmidᵀ
    const torch::Tensor b = torch::randn({k, n}, torch::kFloat64).to(torch::kBFloat16);
    const torch::Tensor a64 = a.to(torch::kFloat64), b64 = b.to(torch::kFloat64);
    const torch::Tensor want = torch::mm(a64, b64);
    // fp32 accumulation of exact bf16 products: far inside one bf16 rounding (1/256 relative).
    const torch::Tensor bound = torch::mm(a64.abs(), b64.abs()) * 1e-5 + 1e-6;
    auto check = [&](const torch::Tensor& got, const torch::Tensor& expected, const std::string& what) {
      ASSERT_EQ(got.scalar_type(), torch::kFloat32) << what;
      const torch::Tensor err = (got.to(torch::kFloat64) - expected).abs();
      EXPECT_TRUE((err <= bound * 2).all().item<bool>())
          << what << ": max error " << err.max().item<double>();
    };
    torch::Tensor c = torch::empty({m, n}, torch::kFloat32);
    product_into(c, a, b);
    check(c, want, name + " row-major");
    product_into(c, a, b, 0.5, /*accumulate=*/true);
    check(c, want * 1.5, name + " accumulated, scaled");
    torch::Tensor ct = torch::empty({n, m}, torch::kFloat32);  // written through a transposed view
    product_into(ct.t(), a, b, 2.0);
    check(ct.t(), want * 2.0, name + " transposed view");
    torch::Tensor cb = torch::empty({m, n}, torch::kBFloat16);  // bf16 output: one rounding
    product_into(cb, a, b);
    expect_product(cb, want, name + " bf16 output");
  }
  torch::Tensor wrong = torch::empty({4, 4}, torch::kFloat32);
  EXPECT_ANY_THROW(
      product_into(wrong, torch::ones({3, 8}, torch::kBFloat16), torch::ones({8, 4}, torch::kBFloat16)));
}

TEST(LoraMatmul, OtherDtypesAreTorchMm) {
  torch::manual_seed(4);
  for (const auto dt : {torch::kFloat32, torch::kFloat64}) {
    const torch::Tensor a = torch::randn({37, 19}, dt), b = torch::randn({23, 19}, dt).t();
    EXPECT_TRUE(torch::equal(product(a, b), torch::mm(a, b)));
    EXPECT_TRUE(torch::equal(product(a, b, 0.5), torch::mm(a, b).mul_(0.5)));
    torch::Tensor c = torch::randn({37, 23}, dt), d = c.clone();
    add_product_(c, a, b, 0.5);
    d.addmm_(a, b, 1.0, 0.5);
    EXPECT_TRUE(torch::equal(c, d));
  }
}

TEST(LoraMatmul, EmptyAndMismatchedOperands) {
  const torch::Tensor a = torch::zeros({0, 8}, torch::kBFloat16), b = torch::ones({8, 4}, torch::kBFloat16);
  EXPECT_EQ(product(a, b).sizes(), (std::vector<int64_t>{0, 4}));
  torch::Tensor c = torch::zeros({3, 4}, torch::kBFloat16);
  EXPECT_ANY_THROW(add_product_(c, torch::ones({2, 8}, torch::kBFloat16), b));  // c has 3 rows, a 2
  EXPECT_ANY_THROW(product(torch::ones({2, 7}, torch::kBFloat16), b));          // inner sizes differ
}

}  // namespace
}  // namespace dsft::peft
