// AdamW against torch.optim.AdamW, parameter groups, exact resume; clipping; the loss scaler.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "dsft/train/grad.h"
#include "dsft/train/optimizer.h"
#include "dsft/util/error.h"

namespace fs = std::filesystem;
using namespace dsft::train;

namespace {

// The same deterministic values as the reference script below (computed in double, then fp32).
torch::Tensor init(int64_t n, int k) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(0.1 * std::cos(0.7 * i + k));
  return torch::tensor(v, torch::kFloat64).to(torch::kFloat32);
}
torch::Tensor grad(int64_t n, int k, int step) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(std::sin(0.3 * i + 1.3 * k + 0.9 * step) * (1.0 + 0.1 * step));
  return torch::tensor(v, torch::kFloat64).to(torch::kFloat32);
}

struct Model {
  torch::Tensor w, b, h;  // fp32 [3,4] (decayed), fp32 [4], bf16 [6] (fp32 master in the optimizer)
  Model() {
    w = init(12, 0).reshape({3, 4}).requires_grad_();
    b = init(4, 1).requires_grad_();
    h = init(6, 2).to(torch::kBFloat16).requires_grad_();
  }
  std::vector<NamedParam> named() const { return {{"layer.weight", w}, {"layer.bias", b}, {"half.weight", h}}; }
  void set_grads(int step) const {
    w.mutable_grad() = grad(12, 0, step).reshape({3, 4});
    b.mutable_grad() = grad(4, 1, step);
    h.mutable_grad() = grad(6, 2, step).to(torch::kBFloat16);
  }
};

AdamW make_adamw(const Model& m) {
  // Groups as the reference: w decayed 0.1; b and h not. make_param_groups must agree (h is 1-D).
  return AdamW(make_param_groups(m.named(), 0.1), AdamWOptions{1e-2, 0.9, 0.999, 1e-8});
}

const double kLrs[] = {1e-2, 2e-2, 3e-2, 2e-2, 1e-2};

void expect_values(const torch::Tensor& t, const std::vector<float>& expected) {
  torch::Tensor f = t.detach().to(torch::kFloat32).flatten().contiguous();
  ASSERT_EQ(f.numel(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_FLOAT_EQ(f[i].item<float>(), expected[i]) << "index " << i;
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("dsft_train_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(AdamW, ParamGroupsExcludeNormsBiasesAndVectors) {
  auto m2 = torch::zeros({2, 2}, torch::requires_grad());
  auto v = torch::zeros({2}, torch::requires_grad());
  EXPECT_TRUE(uses_weight_decay("model.layers.0.self_attn.q_proj.weight", m2));
  EXPECT_FALSE(uses_weight_decay("model.layers.0.input_layernorm.weight", m2));
  EXPECT_FALSE(uses_weight_decay("model.norm.weight", m2));
  EXPECT_FALSE(uses_weight_decay("model.layers.0.self_attn.q_proj.bias", m2));
  EXPECT_FALSE(uses_weight_decay("lm_head.weight_vector", v));
  auto frozen = torch::zeros({2, 2});
  auto groups = make_param_groups({{"a.weight", m2}, {"a.bias", v}, {"frozen.weight", frozen}}, 0.01);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_DOUBLE_EQ(groups[0].weight_decay, 0.01);
  EXPECT_EQ(groups[0].params.size(), 1u);
  EXPECT_EQ(groups[1].params[0].name, "a.bias");
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.0);
}

// Reference: torch.optim.AdamW in Debian's python3-torch 1.13 (foreach=False), produced by
//   /usr/bin/python3 adamw_ref.py   with, in short:
//   w = init(12,0).reshape(3,4); b = init(4,1); h = init(6,2).bfloat16(); hm = h.float()
//   opt = AdamW([{params:[w], weight_decay:0.1}, {params:[b, hm], weight_decay:0}], lr=1e-2,
//               betas=(0.9,0.999), eps=1e-8, foreach=False)
//   for step, lr in enumerate([1e-2,2e-2,3e-2,2e-2,1e-2]): set lr; w.grad, b.grad = grad(..);
//       hm.grad = grad(6,2,step).bfloat16().float(); opt.step(); h = hm.bfloat16()
//   printed with "%.9g" (init/grad as in this file).
TEST(AdamW, MatchesTorchAdamW) {
  Model m;
  AdamW opt = make_adamw(m);
  for (int step = 0; step < 5; ++step) {
    opt.set_lr(kLrs[step]);
    m.set_grads(step);
    opt.step();
  }
  expect_values(m.w, {0.0367455818f, -4.85791825e-05f, -0.0569492653f, -0.117696248f, -0.151699603f, -0.138730302f,
                      -0.0789371207f, 0.00649299938f, 0.0857829973f, 0.130616173f, 0.122786991f, 0.0901935473f});
  expect_values(m.b, {-0.000782204559f, -0.0542111509f, -0.0984496847f, -0.105389245f});
  EXPECT_EQ(m.h.scalar_type(), torch::kBFloat16);
  expect_values(m.h, {-0.0173339844f, -0.0466308594f, -0.0228271484f, 0.0187988281f, 0.08203125f, 0.13671875f});
  EXPECT_EQ(opt.param_step("layer.weight"), 5);
}

TEST(AdamW, KeepsFp32MasterForBf16Params) {
  // Tiny updates vanish in bf16 unless accumulated in an fp32 master copy.
  auto p = torch::ones({4}, torch::kBFloat16).requires_grad_();
  AdamW opt({{{{"p", p}}, 0.0}}, AdamWOptions{1e-4, 0.9, 0.999, 1e-8});
  for (int i = 0; i < 100; ++i) {
    p.mutable_grad() = torch::ones({4}, torch::kBFloat16);
    opt.step();
  }
  // 100 steps of ~1e-4 each: 0.99 in fp32 master; bf16 alone would stay at 1 (spacing 2^-7 near 1).
  EXPECT_NEAR(p[0].item<float>(), 0.9902f, 0.004f);
  EXPECT_LT(p[0].item<float>(), 1.0f);
}

TEST(AdamW, GradMultiplierEqualsPreScaledGradients) {
  Model a, b;
  AdamW oa = make_adamw(a), ob = make_adamw(b);
  for (int step = 0; step < 3; ++step) {
    a.set_grads(step);
    b.set_grads(step);
    for (auto& t : {b.w, b.b, b.h}) t.mutable_grad() = t.grad() * 1024;  // as with a loss scale of 2^10
    oa.step();
    ob.step(1.0 / 1024);
  }
  EXPECT_TRUE(torch::equal(a.w, b.w));
  EXPECT_TRUE(torch::equal(a.h, b.h));
}

// The one-pass CPU update against the tensor ops it replaces (taken for a parameter that is not
// contiguous): bit for bit, over sizes that cover the vectorised body and the tails, with weight
// decay, a gradient multiplier, and gradients spanning many orders of magnitude.
TEST(AdamW, OnePassUpdateEqualsTheTensorOps) {
  torch::manual_seed(7);
  for (const int64_t n : {2, 7, 16, 37, 1031}) {
    const torch::Tensor init = torch::randn({n, 3}) * 0.1;
    torch::Tensor fused = init.clone().requires_grad_();
    torch::Tensor ops = init.t().contiguous().t().requires_grad_();  // same values, column-major
    ASSERT_FALSE(ops.is_contiguous());
    AdamW a({{{{"p", fused}}, 0.05}}, AdamWOptions{3e-3, 0.9, 0.999, 1e-8});
    AdamW b({{{{"p", ops}}, 0.05}}, AdamWOptions{3e-3, 0.9, 0.999, 1e-8});
    for (int step = 0; step < 6; ++step) {
      const torch::Tensor g = torch::randn({n, 3}) * torch::exp(torch::randn({n, 3}) * 4) * 1024;
      fused.mutable_grad() = g.clone();
      ops.mutable_grad() = g.t().contiguous().t();
      a.set_lr(3e-3 * (step + 1));
      b.set_lr(3e-3 * (step + 1));
      a.step(1.0 / 1024);
      b.step(1.0 / 1024);
      ASSERT_TRUE(torch::equal(fused, ops)) << "n " << n << " step " << step << ": max difference "
                                            << (fused - ops).abs().max().item<float>();
    }
  }
}

TEST(AdamW, ResumeAfterSaveLoadIsBitExact) {
  const fs::path dir = temp_dir("adamw_resume");
  Model straight;
  AdamW opt = make_adamw(straight);
  for (int step = 0; step < 5; ++step) {
    opt.set_lr(kLrs[step]);
    straight.set_grads(step);
    opt.step();
  }

  Model first;
  AdamW opt1 = make_adamw(first);
  for (int step = 0; step < 3; ++step) {
    opt1.set_lr(kLrs[step]);
    first.set_grads(step);
    opt1.step();
  }
  opt1.save((dir / "optimizer.safetensors").string());

  // A fresh process would rebuild the model and load the weights; copy them here.
  Model resumed;
  {
    torch::NoGradGuard g;
    resumed.w.copy_(first.w);
    resumed.b.copy_(first.b);
    resumed.h.copy_(first.h);
  }
  AdamW opt2 = make_adamw(resumed);
  opt2.load((dir / "optimizer.safetensors").string());
  EXPECT_EQ(opt2.param_step("half.weight"), 3);
  for (int step = 3; step < 5; ++step) {
    opt2.set_lr(kLrs[step]);
    resumed.set_grads(step);
    opt2.step();
  }
  EXPECT_TRUE(torch::equal(resumed.w, straight.w));
  EXPECT_TRUE(torch::equal(resumed.b, straight.b));
  EXPECT_TRUE(torch::equal(resumed.h, straight.h));
  fs::remove_all(dir);
}

TEST(AdamW, LoadRejectsStateOfOtherParameters) {
  const fs::path dir = temp_dir("adamw_mismatch");
  Model m;
  AdamW opt = make_adamw(m);
  m.set_grads(0);
  opt.step();
  const std::string path = (dir / "optimizer.safetensors").string();
  opt.save(path);

  auto other = torch::zeros({3, 5}, torch::requires_grad());  // another rank
  AdamW wrong_shape({{{{"layer.weight", other}}, 0.0}}, AdamWOptions{});
  try {
    wrong_shape.load(path);
    ADD_FAILURE() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not trainable in this run"), std::string::npos) << e.what();
  }
  AdamW shape_only({{{{"layer.weight", other}, {"layer.bias", m.b}, {"half.weight", m.h}}, 0.0}}, AdamWOptions{});
  try {
    shape_only.load(path);
    ADD_FAILURE() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(AdamW({{{{"x", m.w}, {"x", m.b}}, 0.0}}, AdamWOptions{}), dsft::Error);  // duplicate names
  fs::remove_all(dir);
}

TEST(GradClip, NormAndClipMatchTorch) {
  auto a = torch::zeros({3}, torch::requires_grad());
  auto b = torch::zeros({2, 2}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f, 0.0f});
  b.mutable_grad() = torch::full({2, 2}, 2.0f);  // norm 4; total 5
  EXPECT_DOUBLE_EQ(global_grad_norm({a, b}), 5.0);
  EXPECT_DOUBLE_EQ(global_grad_norm({a, b}, 0.5), 2.5);
  const double before = clip_grad_norm_({a, b}, 1.0);
  EXPECT_DOUBLE_EQ(before, 5.0);
  EXPECT_NEAR(global_grad_norm({a, b}), 1.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 3.0f / (5.0f + 1e-6f), 1e-7);
  // Under the limit: untouched. Disabled (max_norm 0): untouched.
  EXPECT_NEAR(clip_grad_norm_({a, b}, 10.0), 1.0, 1e-6);
  EXPECT_NEAR(global_grad_norm({a, b}), 1.0, 1e-6);
  EXPECT_DOUBLE_EQ(clip_coefficient(100.0, 0.0), 1.0);
}

TEST(GradClip, NonFiniteIsReportedAndLeavesGradients) {
  auto a = torch::zeros({2}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity()});
  EXPECT_TRUE(std::isinf(clip_grad_norm_({a}, 1.0)));
  EXPECT_EQ(a.grad()[0].item<float>(), 1.0f);
  a.mutable_grad() = torch::tensor({1.0f, std::nanf("")});
  EXPECT_TRUE(std::isnan(clip_grad_norm_({a}, 1.0)));
  // fp16 gradients scaled by 2^16 are summed in fp32, not overflowing in fp16.
  auto h = torch::zeros({4}, torch::kFloat16).requires_grad_();
  h.mutable_grad() = torch::full({4}, 40000.0, torch::kFloat16);  // squares overflow fp16
  EXPECT_NEAR(global_grad_norm({h}, 1.0 / 65536), 80000.0 / 65536, 1e-6);
}

TEST(LossScaler, GrowsBacksOffAndRestores) {
  LossScaler s(true, 65536.0, 2.0, 0.5, 3);
  EXPECT_DOUBLE_EQ(s.scale(), 65536.0);
  EXPECT_TRUE(s.update(false));
  EXPECT_TRUE(s.update(false));
  EXPECT_DOUBLE_EQ(s.scale(), 65536.0);
  EXPECT_TRUE(s.update(false));  // third clean step: grow
  EXPECT_DOUBLE_EQ(s.scale(), 131072.0);
  EXPECT_TRUE(s.update(false));
  EXPECT_FALSE(s.update(true));  // overflow: skip and back off, tracker resets
  EXPECT_DOUBLE_EQ(s.scale(), 65536.0);
  EXPECT_EQ(s.state().growth_tracker, 0);
  EXPECT_TRUE(s.update(false));

  LossScaler restored(true, 65536.0, 2.0, 0.5, 3);
  restored.set_state(s.state());
  EXPECT_TRUE(restored.update(false));
  EXPECT_TRUE(restored.update(false));
  EXPECT_DOUBLE_EQ(restored.scale(), 131072.0);  // counted the step before the save
  EXPECT_THROW(restored.set_state({0.0, 0}), dsft::Error);

  LossScaler off(false);
  EXPECT_DOUBLE_EQ(off.scale(), 1.0);
  EXPECT_FALSE(off.update(true));  // a NaN loss still skips the step
  EXPECT_DOUBLE_EQ(LossScaler(true).state().scale, 65536.0);
}
