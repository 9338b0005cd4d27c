// dsft::peft::Linear: plain numerics equal torch::nn::Linear; LoRA names, initialisation, scale,
// dropout, disable switch; gradients against central differences; merge for every base format.
#include "dsft/peft/lora_linear.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <string>

#include "dsft/util/error.h"

namespace dsft::peft {
namespace {

std::set<std::string> param_names(const torch::nn::Module& m) {
  std::set<std::string> names;
  for (const auto& p : m.named_parameters()) names.insert(p.key());
  return names;
}

double max_rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

// Gives the adapter non-zero B so that both factors matter.
void randomise_adapter(LinearImpl& lin) {
  torch::NoGradGuard no_grad;
  lin.lora_B->weight.normal_(0, 0.5);
}

TEST(Linear, PlainLayerIsTorchLinear) {
  torch::manual_seed(7);
  torch::nn::Linear ref(torch::nn::LinearOptions(5, 7));
  torch::manual_seed(7);
  Linear lin(5, 7);
  EXPECT_TRUE(torch::equal(lin->weight, ref->weight));
  EXPECT_TRUE(torch::equal(lin->bias, ref->bias));
  EXPECT_EQ(param_names(*lin), (std::set<std::string>{"weight", "bias"}));
  torch::Tensor x = torch::randn({2, 3, 5});
  EXPECT_TRUE(torch::equal(lin(x), ref(x)));
  EXPECT_TRUE(lin->weight.requires_grad());

  Linear nobias(LinearOptions(5, 7).bias(false));
  EXPECT_EQ(param_names(*nobias), (std::set<std::string>{"weight"}));
  EXPECT_THROW(lin(torch::randn({2, 4})), dsft::Error);
}

TEST(Linear, LoraNamesShapesAndInitialisation) {
  torch::manual_seed(8);
  Linear lin(40, 24);
  lin->enable_lora(LoraOptions().r(4).alpha(8));
  EXPECT_EQ(param_names(*lin), (std::set<std::string>{"weight", "bias", "lora_A.weight", "lora_B.weight"}));
  EXPECT_EQ(lin->lora_A->weight.sizes(), (std::vector<int64_t>{4, 40}));
  EXPECT_EQ(lin->lora_B->weight.sizes(), (std::vector<int64_t>{24, 4}));
  EXPECT_FALSE(lin->weight.requires_grad());
  EXPECT_TRUE(lin->lora_A->weight.requires_grad());
  EXPECT_TRUE(torch::equal(lin->lora_B->weight, torch::zeros({24, 4})));
  // kaiming_uniform(a = sqrt(5)) on fan_in 40: U(-1/sqrt(40), 1/sqrt(40)).
  const double bound = 1.0 / std::sqrt(40.0);
  EXPECT_LE(lin->lora_A->weight.abs().max().item<double>(), bound);
  EXPECT_GT(lin->lora_A->weight.abs().max().item<double>(), 0.8 * bound);
  EXPECT_NEAR(lin->lora_A->weight.mean().item<double>(), 0.0, 0.03);
  // B = 0: a fresh adapter leaves the output exactly unchanged.
  torch::Tensor x = torch::randn({3, 40});
  EXPECT_TRUE(torch::equal(lin(x), torch::linear(x, lin->weight, lin->bias)));
  EXPECT_DOUBLE_EQ(lin->lora_scale(), 2.0);
}

TEST(Linear, RsLoraScale) {
  EXPECT_DOUBLE_EQ(LoraOptions().r(16).alpha(32).scale(), 2.0);
  EXPECT_DOUBLE_EQ(LoraOptions().r(16).alpha(32).use_rslora(true).scale(), 8.0);
  torch::manual_seed(9);
  Linear lin(6, 5);
  lin->to(torch::kFloat64);
  lin->enable_lora(LoraOptions().r(4).alpha(3).use_rslora(true).dtype(torch::kFloat64));
  randomise_adapter(*lin);
  torch::Tensor x = torch::randn({2, 6}, torch::kFloat64);
  torch::Tensor delta = lin(x) - torch::linear(x, lin->weight, lin->bias);
  torch::Tensor expected =
      torch::linear(torch::linear(x, lin->lora_A->weight), lin->lora_B->weight) * (3.0 / 2.0);
  EXPECT_TRUE(torch::allclose(delta, expected, 1e-12, 1e-12));
}

TEST(Linear, DisableSwitchGivesTheBaseOutputExactly) {
  torch::manual_seed(10);
  Linear lin(8, 8);
  lin->enable_lora(LoraOptions().r(2).alpha(4).dropout(0.3));
  randomise_adapter(*lin);
  torch::Tensor x = torch::randn({4, 8});
  torch::Tensor base = torch::linear(x, lin->weight, lin->bias);
  EXPECT_FALSE(torch::allclose(lin(x), base));
  lin->set_adapter_enabled(false);
  EXPECT_TRUE(torch::equal(lin(x), base));
  lin->set_adapter_enabled(true);
  EXPECT_FALSE(torch::allclose(lin(x), base));
}

TEST(Linear, DropoutActsOnTheLoraPathOnly) {
  torch::manual_seed(11);
  // A = B = identity and scale 1: the LoRA path returns dropout(x) itself.
  Linear lin(LinearOptions(6, 6));
  lin->to(torch::kFloat64);
  lin->enable_lora(LoraOptions().r(6).alpha(6).dropout(0.5).dtype(torch::kFloat64));
  {
    torch::NoGradGuard no_grad;
    lin->lora_A->weight.copy_(torch::eye(6, torch::kFloat64));
    lin->lora_B->weight.copy_(torch::eye(6, torch::kFloat64));
  }
  torch::Tensor x = torch::rand({50, 6}, torch::kFloat64) + 1.0;  // no zeros of its own
  torch::Tensor base = torch::linear(x, lin->weight, lin->bias);
  lin->train();
  torch::Tensor delta = lin(x) - base;
  torch::Tensor dropped = delta.abs() < 1e-9;
  torch::Tensor kept = (delta - 2.0 * x).abs() < 1e-9;  // survivors scaled by 1 / (1 - p)
  EXPECT_TRUE((dropped | kept).all().item<bool>());
  const double frac = dropped.to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(frac, 0.35);
  EXPECT_LT(frac, 0.65);
  lin->eval();
  EXPECT_TRUE(torch::allclose(lin(x) - base, x, 1e-12, 1e-12));
}

// Central differences on a float64 two-layer stack with adapters on both layers.
TEST(Linear, LoraGradientsMatchFiniteDifferences) {
  torch::manual_seed(12);
  Linear l1(6, 5), l2(5, 3);
  for (Linear* l : {&l1, &l2}) {
    (*l)->to(torch::kFloat64);
    (*l)->enable_lora(LoraOptions().r(2).alpha(3).dtype(torch::kFloat64));
    randomise_adapter(**l);
  }
  torch::Tensor x = torch::randn({4, 6}, torch::kFloat64);
  torch::Tensor probe = torch::randn({4, 3}, torch::kFloat64);
  auto loss = [&]() { return (l2(torch::tanh(l1(x))) * probe).sum(); };
  loss().backward();
  for (Linear* l : {&l1, &l2}) {
    EXPECT_FALSE((*l)->weight.grad().defined());
    for (torch::Tensor p : {(*l)->lora_A->weight, (*l)->lora_B->weight}) {
      torch::Tensor analytic = p.grad().clone();
      ASSERT_TRUE(analytic.defined());
      torch::Tensor numeric = torch::zeros_like(p);
      torch::NoGradGuard no_grad;
      const double eps = 1e-6;
      auto flat = p.view({-1});
      for (int64_t i = 0; i < flat.numel(); ++i) {
        const double orig = flat[i].item<double>();
        flat[i] = orig + eps;
        const double up = loss().item<double>();
        flat[i] = orig - eps;
        const double down = loss().item<double>();
        flat[i] = orig;
        numeric.view({-1})[i] = (up - down) / (2 * eps);
      }
      EXPECT_TRUE(torch::allclose(analytic, numeric, 1e-6, 1e-8))
          << "max diff " << (analytic - numeric).abs().max().item<double>();
      EXPECT_GT(analytic.abs().max().item<double>(), 1e-3);
    }
  }
}

TEST(Linear, QuantisedBaseGradientReachesTheInput) {
  torch::manual_seed(13);
  for (BaseFormat format : {BaseFormat::nf4, BaseFormat::int8}) {
    Linear lin(64, 10);
    lin->to(torch::kFloat64);
    lin->quantize(format);
    lin->set_dequant_chunk_elements(64 * 3);  // 4 chunks of rows
    lin->enable_lora(LoraOptions().r(2).alpha(2).dtype(torch::kFloat64));
    randomise_adapter(*lin);
    torch::Tensor w = lin->base_weight(torch::kFloat64);
    torch::Tensor x = torch::randn({2, 3, 64}, torch::kFloat64).requires_grad_(true);
    torch::Tensor probe = torch::randn({2, 3, 10}, torch::kFloat64);
    (lin(x) * probe).sum().backward();
    // Reference: the same function on the dequantised weight with ordinary autograd.
    torch::Tensor xr = x.detach().clone().requires_grad_(true);
    torch::Tensor a = lin->lora_A->weight.detach(), b = lin->lora_B->weight.detach();
    torch::Tensor yr =
        torch::linear(xr, w, lin->bias.detach()) + torch::linear(torch::linear(xr, a), b) * lin->lora_scale();
    (yr * probe).sum().backward();
    EXPECT_TRUE(torch::allclose(x.grad(), xr.grad(), 1e-10, 1e-12)) << base_format_name(format);
    EXPECT_TRUE(lin->lora_A->weight.grad().defined());
  }
}

TEST(Linear, QuantisedLayerDropsTheDenseWeight) {
  torch::manual_seed(14);
  Linear lin(128, 64);
  lin->to(torch::kBFloat16);
  lin->quantize(BaseFormat::nf4, {64, true});
  EXPECT_TRUE(lin->is_quantized());
  EXPECT_FALSE(lin->weight.defined());
  EXPECT_EQ(param_names(*lin), (std::set<std::string>{"bias"}));
  EXPECT_EQ(lin->base_dtype(), torch::kBFloat16);
  EXPECT_LT(lin->base_nbytes(), 128 * 64 * 0.52);
  EXPECT_THROW(lin->quantize(BaseFormat::int8), dsft::Error);
  // A dtype cast leaves the codes alone and changes what merged weights come out as.
  lin->to(torch::kFloat32);
  EXPECT_EQ(lin->nf4_weight().packed.scalar_type(), torch::kByte);
  EXPECT_EQ(lin->base_dtype(), torch::kFloat32);
  torch::Tensor y = lin(torch::randn({3, 128}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
}

TEST(Linear, ChunkedDequantisationGivesTheSameOutput) {
  torch::manual_seed(15);
  Linear lin(LinearOptions(96, 40).bias(false));
  lin->quantize(BaseFormat::nf4);
  torch::Tensor x = torch::randn({5, 96});
  torch::Tensor whole = lin(x);
  lin->set_dequant_chunk_elements(96 * 7);
  EXPECT_TRUE(torch::allclose(lin(x), whole, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(whole, torch::linear(x, lin->base_weight(torch::kFloat32)), 1e-6, 1e-6));
}

TEST(Linear, MergeMatchesBasePlusAdapterForEveryFormat) {
  for (BaseFormat format : {BaseFormat::dense, BaseFormat::nf4, BaseFormat::int8}) {
    torch::manual_seed(16);
    Linear lin(48, 20);
    lin->quantize(format);
    lin->enable_lora(LoraOptions().r(4).alpha(16));
    randomise_adapter(*lin);
    torch::Tensor x = torch::randn({6, 48});
    torch::Tensor y = lin(x);
    torch::Tensor merged = merged_weight(*lin);
    EXPECT_EQ(merged.scalar_type(), torch::kFloat32);
    torch::Tensor ym = torch::linear(x, merged, lin->bias);
    EXPECT_LE(max_rel_diff(ym, y), 1e-5) << base_format_name(format);
    // The adapter really changes the function, so the comparison means something.
    EXPECT_GT(max_rel_diff(torch::linear(x, lin->base_weight(torch::kFloat32), lin->bias), y), 1e-2);
    // merged_weight is pure; merge_and_unload folds the adapter in.
    EXPECT_TRUE(lin->has_lora());
    merge_and_unload(*lin);
    EXPECT_FALSE(lin->has_lora());
    EXPECT_EQ(lin->format(), BaseFormat::dense);
    EXPECT_EQ(param_names(*lin), (std::set<std::string>{"weight", "bias"}));
    EXPECT_LE(max_rel_diff(lin(x), y), 1e-5) << base_format_name(format);
  }
}

TEST(Linear, MergeCastsToTheBaseDtype) {
  torch::manual_seed(17);
  Linear lin(16, 8);
  lin->to(torch::kBFloat16);
  lin->enable_lora(LoraOptions().r(2).alpha(2));
  randomise_adapter(*lin);
  torch::Tensor merged = merged_weight(*lin);
  EXPECT_EQ(merged.scalar_type(), torch::kBFloat16);
  torch::Tensor exact = lin->weight.to(torch::kFloat32) +
                        torch::mm(lin->lora_B->weight, lin->lora_A->weight) * lin->lora_scale();
  EXPECT_TRUE(torch::equal(merged, exact.to(torch::kBFloat16)));
}

TEST(Linear, RejectsBadAdapterOptions) {
  Linear lin(4, 4);
  EXPECT_THROW(lin->enable_lora(LoraOptions().r(0)), dsft::Error);
  EXPECT_THROW(lin->enable_lora(LoraOptions().dropout(1.0)), dsft::Error);
  EXPECT_THROW(lin->enable_lora(LoraOptions().dtype(torch::kLong)), dsft::Error);
  EXPECT_FALSE(lin->has_lora());
  // Enabling twice replaces the adapter.
  lin->enable_lora(LoraOptions().r(2));
  lin->enable_lora(LoraOptions().r(3).dropout(0.1));
  EXPECT_EQ(lin->lora_A->weight.size(0), 3);
  EXPECT_EQ(param_names(*lin).size(), 4u);
}

// The adapted layer runs as one autograd node when it trains; its value and gradients (input,
// both factors, bias) are PEFT's formula y = x Wᵀ + b + (x Aᵀ Bᵀ) · scale written out as ops.
TEST(Linear, TrainingNodeMatchesThePeftFormula) {
  torch::manual_seed(21);
  Linear lin(LinearOptions(7, 5).bias(true));
  lin->to(torch::kFloat64);
  lin->enable_lora(LoraOptions().r(3).alpha(5).dtype(torch::kFloat64));
  randomise_adapter(*lin);
  lin->bias.set_requires_grad(true);  // bias: lora_only trains it
  auto x = torch::randn({2, 4, 7}, torch::kFloat64).requires_grad_(true);
  auto probe = torch::randn({2, 4, 5}, torch::kFloat64);
  (lin(x) * probe).sum().backward();

  auto x2 = x.detach().clone().requires_grad_(true);
  auto a = lin->lora_A->weight.detach().clone().requires_grad_(true);
  auto b = lin->lora_B->weight.detach().clone().requires_grad_(true);
  auto bias = lin->bias.detach().clone().requires_grad_(true);
  auto want =
      torch::linear(x2, lin->weight.detach(), bias) + torch::linear(torch::linear(x2, a), b) * (5.0 / 3.0);
  (want * probe).sum().backward();
  EXPECT_LE(max_rel_diff(lin(x).detach(), want.detach()), 1e-12);
  EXPECT_LE(max_rel_diff(x.grad(), x2.grad()), 1e-12);
  EXPECT_LE(max_rel_diff(lin->lora_A->weight.grad(), a.grad()), 1e-12);
  EXPECT_LE(max_rel_diff(lin->lora_B->weight.grad(), b.grad()), 1e-12);
  EXPECT_LE(max_rel_diff(lin->bias.grad(), bias.grad()), 1e-12);
}

// Mixed precision: a bf16 base with fp32 factors computes the adapter in bf16 (as autocast does)
// and leaves fp32 gradients on the factors, close to the all-fp32 computation.
TEST(Linear, LoraAutocastKeepsFp32FactorsAndGradients) {
  torch::manual_seed(22);
  Linear ref(LinearOptions(64, 48).bias(false));
  ref->enable_lora(LoraOptions().r(8).alpha(16));
  randomise_adapter(*ref);
  Linear mixed(LinearOptions(64, 48).bias(false));
  {
    torch::NoGradGuard no_grad;
    mixed->weight.copy_(ref->weight);
  }
  mixed->to(torch::kBFloat16);
  mixed->enable_lora(LoraOptions().r(8).alpha(16));
  {
    torch::NoGradGuard no_grad;
    mixed->lora_A->weight.copy_(ref->lora_A->weight);
    mixed->lora_B->weight.copy_(ref->lora_B->weight);
  }
  mixed->set_lora_autocast(true);
  auto x = torch::randn({16, 64});
  auto probe = torch::randn({16, 48});
  (ref(x) * probe).sum().backward();
  auto y = mixed(x.to(torch::kBFloat16));
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  (y.to(torch::kFloat32) * probe).sum().backward();
  EXPECT_EQ(mixed->lora_A->weight.scalar_type(), torch::kFloat32);
  EXPECT_EQ(mixed->lora_A->weight.grad().scalar_type(), torch::kFloat32);
  EXPECT_EQ(mixed->lora_B->weight.grad().scalar_type(), torch::kFloat32);
  EXPECT_LE(max_rel_diff(y.to(torch::kFloat32).detach(), ref(x).detach()), 3e-2);
  EXPECT_LE(max_rel_diff(mixed->lora_A->weight.grad(), ref->lora_A->weight.grad()), 5e-2);
  EXPECT_LE(max_rel_diff(mixed->lora_B->weight.grad(), ref->lora_B->weight.grad()), 5e-2);
}

}  // namespace
}  // namespace dsft::peft
