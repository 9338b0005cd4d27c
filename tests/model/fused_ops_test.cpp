// The fused CPU paths against the tensor-op formulas they replace: RMSNorm (alone and after a
// residual add), SwiGLU, the RoPE
// rotation and the summed cross-entropy (values and gradients, fp64/fp32/bf16), and attention over packed
// records regrouped by pack_spans() against the block-diagonal document mask, for every model family (logits
// and gradients, rows with padding, records of every length).
#include <gtest/gtest.h>

#include <random>

#include "dsft/model/causal_lm.h"
#include "dsft/model/commands.h"
#include "dsft/model/layers.h"
#include "dsft/model/loss.h"
#include "dsft/model/registry.h"
#include "dsft/model/rope.h"
#include "dsft/peft/inject.h"
#include "dsft/util/error.h"

using namespace dsft;
using namespace dsft::model;

namespace {

double max_rel(const torch::Tensor& got, const torch::Tensor& want) {
  auto g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

torch::Tensor rms_ops(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto acc = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto h = x.to(acc);
  h = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps);
  return w * h.to(x.scalar_type());
}

// Value and gradients (x, w) of f under a fixed random projection of its output.
std::vector<torch::Tensor> value_and_grads(
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& f, const torch::Tensor& a,
    const torch::Tensor& b, const torch::Tensor& probe) {
  auto x = a.detach().clone().requires_grad_(true), y = b.detach().clone().requires_grad_(true);
  auto out = f(x, y);
  (out.to(torch::kFloat64) * probe).sum().backward();
  return {out.detach(), x.grad(), y.grad()};
}

ModelConfig tiny_config(const std::string& arch) {
  for (const auto& [name, text] : builtin_presets())
    if (name == arch + "-tiny") return parse_config(nlohmann::json::parse(text));
  throw std::runtime_error("no tiny preset for " + arch);
}

// A random fp64 model of the family's tiny preset.
CausalLM tiny_fp64(const Family& family, uint64_t seed) {
  auto lm = family.build(tiny_config(family.name), torch::TensorOptions().dtype(torch::kFloat64));
  init_weights(*lm, seed);
  return lm;
}

}  // namespace

TEST(FusedOps, RmsNormMatchesTheFormulaWithGradients) {
  torch::manual_seed(3);
  for (auto dt : {torch::kFloat64, torch::kFloat32, torch::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dt));
    auto x = (torch::randn({3, 5, 67}, torch::kFloat64) * 3).to(dt);
    auto w = (torch::randn({67}, torch::kFloat64) * 0.5 + 1).to(dt);
    auto probe = torch::randn({3, 5, 67}, torch::kFloat64);
    auto fused = value_and_grads([](auto& a, auto& b) { return rms_norm(a, b, 1e-6); }, x, w, probe);
    auto ops = value_and_grads([](auto& a, auto& b) { return rms_ops(a, b, 1e-6); }, x, w, probe);
    const double tol = dt == torch::kFloat64 ? 1e-12 : dt == torch::kFloat32 ? 1e-5 : 2e-2;
    EXPECT_LE(max_rel(fused[0], ops[0]), tol);
    EXPECT_LE(max_rel(fused[1], ops[1]), tol);
    EXPECT_LE(max_rel(fused[2], ops[2]), tol);
  }
}

TEST(FusedOps, RmsNormGradientMatchesFiniteDifferences) {
  torch::manual_seed(4);
  auto x = torch::randn({4, 33}, torch::kFloat64), w = torch::randn({33}, torch::kFloat64);
  auto xr = x.clone().requires_grad_(true);
  auto probe = torch::randn({4, 33}, torch::kFloat64);
  (rms_norm(xr, w, 1e-5) * probe).sum().backward();
  const double h = 1e-6;
  for (int64_t i : {0, 7, 40, 131}) {
    auto xp = x.clone(), xm = x.clone();
    xp.view(-1)[i] += h;
    xm.view(-1)[i] -= h;
    const double fd = ((rms_norm(xp, w, 1e-5) * probe).sum().item<double>() -
                       (rms_norm(xm, w, 1e-5) * probe).sum().item<double>()) /
                      (2 * h);
    EXPECT_NEAR(xr.grad().view(-1)[i].item<double>(), fd, 1e-7) << i;
  }
}

TEST(FusedOps, ResidualAddAndRmsNormMatchTheOpsWithGradients) {
  torch::manual_seed(6);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    for (const bool norm_used : {true, false}) {
      SCOPED_TRACE(std::string(c10::toString(dt)) + (norm_used ? "" : ", only the sum used"));
      const auto x0 = (torch::randn({3, 5, 67}, torch::kFloat64) * 3).to(dt);
      const auto d0 = (torch::randn({3, 5, 67}, torch::kFloat64) * 2).to(dt);
      const auto w0 = (torch::randn({67}, torch::kFloat64) * 0.5 + 1).to(dt);
      const auto p_sum = torch::randn({3, 5, 67}, torch::kFloat64),
                 p_norm = torch::randn({3, 5, 67}, torch::kFloat64);
      auto run = [&](bool fused) {
        auto x = x0.clone().requires_grad_(true), d = d0.clone().requires_grad_(true),
             w = w0.clone().requires_grad_(true);
        torch::Tensor h, y;
        if (fused) {
          std::tie(h, y) = add_rms_norm(x, d, w, 1e-6);
        } else {
          h = x + d;
          y = rms_ops(h, w, 1e-6);
        }
        auto loss = (h.to(torch::kFloat64) * p_sum).sum();
        if (norm_used) loss = loss + (y.to(torch::kFloat64) * p_norm).sum();
        loss.backward();
        return std::vector<torch::Tensor>{h.detach(), y.detach(), x.grad(), d.grad(), w.grad()};
      };
      const auto fused = run(true), ops = run(false);
      const double tol = dt == torch::kFloat32 ? 1e-5 : 2e-2;
      EXPECT_TRUE(torch::equal(fused[0], ops[0]));  // the sum rounds as one addition
      EXPECT_LE(max_rel(fused[1], ops[1]), tol);
      EXPECT_LE(max_rel(fused[2], ops[2]), tol);
      EXPECT_LE(max_rel(fused[3], ops[3]), tol);
      EXPECT_TRUE(torch::equal(fused[2], fused[3]));  // both addends get the same gradient
      if (norm_used) {
        EXPECT_LE(max_rel(fused[4], ops[4]), tol);
      } else {
        EXPECT_TRUE(torch::equal(fused[2], p_sum.to(dt)));
        EXPECT_EQ(fused[4].abs().max().item<double>(), 0.0);
      }
    }
  }
}

TEST(FusedOps, SwigluMatchesTheFormulaWithGradients) {
  torch::manual_seed(5);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dt));
    // Values from deep in both tails (silu(-90) = -0, silu(90) = 90) to the middle.
    auto g = (torch::randn({4, 3, 517}, torch::kFloat64) * 6).to(dt);
    g.view(-1)[0] = -90;
    g.view(-1)[1] = 90;
    g.view(-1)[2] = 0;
    auto u = torch::randn({4, 3, 517}, torch::kFloat64).to(dt);
    auto probe = torch::randn({4, 3, 517}, torch::kFloat64);
    auto fused = value_and_grads([](auto& a, auto& b) { return swiglu(a, b); }, g, u, probe);
    auto ops = value_and_grads([](auto& a, auto& b) { return torch::silu(a) * b; }, g, u, probe);
    const double tol = dt == torch::kFloat32 ? 2e-6 : 1e-2;
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(torch::isfinite(fused[i]).all().item<bool>()) << i;
      EXPECT_LE(max_rel(fused[i], ops[i]), tol) << i;
    }
    if (dt == torch::kBFloat16) {
      // Against the exact value (fp64), the fused bf16 output is no further off than the ops'
      // (which evaluate silu at a lower precision in bf16).
      auto exact = torch::silu(g.to(torch::kFloat64)) * u.to(torch::kFloat64);
      const double fused_err = (fused[0].to(torch::kFloat64) - exact).abs().mean().item<double>();
      const double ops_err = (ops[0].to(torch::kFloat64) - exact).abs().mean().item<double>();
      EXPECT_LE(fused_err, ops_err * 1.01);
    }
  }
}

TEST(FusedOps, RopeRotationMatchesTheFormulaWithGradients) {
  torch::manual_seed(6);
  for (auto layout : {RopeLayout::rotate_half, RopeLayout::interleaved}) {
    for (auto dt : {torch::kFloat64, torch::kFloat32, torch::kBFloat16}) {
      SCOPED_TRACE(std::string(layout == RopeLayout::rotate_half ? "rotate_half " : "interleaved ") +
                   c10::toString(dt));
      Rope rope(RopeOptions(16, 10000.0).layout(layout));
      auto pos = torch::randint(0, 500, {2, 9}, torch::kInt64);
      auto tables = rope.tables(pos);
      // [B, T, H, D] transposed to [B, H, T, D]: strided, as attention produces it.
      auto x = torch::randn({2, 9, 3, 16}, torch::kFloat64).to(dt).transpose(1, 2);
      auto probe = torch::randn({2, 3, 9, 16}, torch::kFloat64);
      auto xr = x.detach().clone().requires_grad_(true);
      auto got = rope.apply(xr, tables);
      (got.to(torch::kFloat64) * probe).sum().backward();
      // The rotation written out in fp64.
      auto x64 = x.to(torch::kFloat64).detach().requires_grad_(true);
      auto c = tables.cos.to(torch::kFloat64), s = tables.sin.to(torch::kFloat64);
      torch::Tensor want;
      if (layout == RopeLayout::rotate_half) {
        auto a = x64.narrow(-1, 0, 8), b = x64.narrow(-1, 8, 8);
        want = torch::cat({a * c - b * s, b * c + a * s}, -1);
      } else {
        auto p = x64.reshape({2, 3, 9, 8, 2});
        auto a = p.select(-1, 0), b = p.select(-1, 1);
        want = torch::stack({a * c - b * s, a * s + b * c}, -1).flatten(-2);
      }
      (want * probe).sum().backward();
      const double tol = dt == torch::kBFloat16 ? 1e-2 : 1e-6;
      EXPECT_LE(max_rel(got, want), tol);
      EXPECT_LE(max_rel(xr.grad(), x64.grad()), tol);
    }
  }
}

// The fused cross-entropy against log_softmax + nll in fp64 on the same (rounded) logits: value
// and logit gradient (times an upstream scale), row widths that leave tails, logits spread wide
// enough that an unshifted exp would overflow, and the gradient in the logits' dtype.
TEST(FusedOps, CrossEntropySumMatchesTheFormulaWithGradients) {
  torch::manual_seed(11);
  for (const auto dt : {torch::kFloat32, torch::kBFloat16}) {
    for (const int64_t V : {1, 15, 17, 1000, 8192}) {
      for (const double spread : {1.0, 30.0}) {
        const int64_t N = 23;
        const torch::Tensor logits = (torch::randn({N, V}) * spread + 50.0).to(dt);
        const torch::Tensor targets = torch::randint(0, V, {N}, torch::kInt64);
        auto x = logits.clone().requires_grad_(true);
        const torch::Tensor loss = cross_entropy_sum(x, targets);
        EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
        (loss * 0.37).backward();
        EXPECT_EQ(x.grad().scalar_type(), dt);

        auto ref_x = logits.to(torch::kFloat64).requires_grad_(true);
        const torch::Tensor logp = torch::log_softmax(ref_x, 1);
        const torch::Tensor ref = -logp.gather(1, targets.unsqueeze(1)).sum();
        (ref * 0.37).backward();
        const double want = ref.item<double>();
        EXPECT_NEAR(loss.item<double>(), want, 1e-6 * std::max(1.0, std::abs(want)))
            << "dtype " << dt << " V " << V << " spread " << spread;
        // fp32 arithmetic, then (bf16) one rounding of the gradient.
        const double tol = dt == torch::kBFloat16 ? 8e-3 : 2e-6;
        EXPECT_LT((x.grad().to(torch::kFloat64) - ref_x.grad()).abs().max().item<double>(), tol * 0.37)
            << "dtype " << dt << " V " << V << " spread " << spread;
      }
    }
  }
}

TEST(FusedOps, CrossEntropySumPassesNanAndRejectsBadTargets) {
  torch::Tensor x = torch::zeros({2, 40});
  x[1][33] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(cross_entropy_sum(x, torch::tensor({3, 5}, torch::kInt64)).item<double>()));
  EXPECT_TRUE(std::isnan(
      cross_entropy_sum(x.to(torch::kBFloat16), torch::tensor({3, 5}, torch::kInt64)).item<double>()));
  EXPECT_NEAR(cross_entropy_sum(x.narrow(0, 0, 1), torch::tensor({7}, torch::kInt64)).item<double>(),
              std::log(40.0), 1e-6);
  EXPECT_THROW(cross_entropy_sum(x, torch::tensor({3, 40}, torch::kInt64)), dsft::Error);
  EXPECT_THROW(cross_entropy_sum(x, torch::tensor({-1, 0}, torch::kInt64)), dsft::Error);
}

// The fused masked softmax of the attention core (fp32 and bf16) against softmax(q kᵀ · scale) v
// in fp64 on the same inputs: no mask, one causal mask for every row, a mask per batch row with a
// fully masked query (uniform, as masked_fill + softmax gives it); values and q, k, v gradients.
TEST(FusedOps, AttentionSoftmaxMatchesTheFormulaWithGradients) {
  torch::manual_seed(5);
  const int64_t B = 2, H = 3, T = 7, D = 5;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const torch::Tensor causal = torch::ones({T, T}, torch::kBool).tril().view({1, 1, T, T});
  torch::Tensor per_row = torch::rand({B, 1, T, T}).gt(0.4).logical_and(causal);
  per_row[1][0][3].fill_(false);  // a query that may attend nowhere
  for (const auto dt : {torch::kFloat32, torch::kBFloat16}) {
    for (const torch::Tensor& mask : {torch::Tensor(), causal, per_row}) {
      const torch::Tensor q0 = torch::randn({B, H, T, D}).to(dt), k0 = torch::randn({B, H, T, D}).to(dt),
                          v0 = torch::randn({B, H, T, D}).to(dt),
                          probe = torch::randn({B, H, T, D}, torch::kFloat64);
      auto run = [&](const torch::Tensor& qi, const torch::Tensor& ki, const torch::Tensor& vi,
                     bool reference) {
        auto q = qi.detach().clone().requires_grad_(true), k = ki.detach().clone().requires_grad_(true),
             v = vi.detach().clone().requires_grad_(true);
        torch::Tensor out;
        if (reference) {
          auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
          if (mask.defined())
            scores = scores.masked_fill(mask.logical_not(), std::numeric_limits<double>::lowest());
          out = torch::matmul(torch::softmax(scores, -1), v);
        } else {
          AttentionContext ctx;
          ctx.mask = mask;
          out = attention_core(q, k, v, ctx, scale);
        }
        (out.to(torch::kFloat64) * probe).sum().backward();
        return std::vector<torch::Tensor>{out.detach(), q.grad(), k.grad(), v.grad()};
      };
      const auto got = run(q0, k0, v0, false);
      const auto want = run(q0.to(torch::kFloat64), k0.to(torch::kFloat64), v0.to(torch::kFloat64), true);
      const double tol = dt == torch::kBFloat16 ? 3e-2 : 2e-6;
      const char* names[] = {"output", "dq", "dk", "dv"};
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].scalar_type(), dt) << names[i];
        EXPECT_LT(max_rel(got[i], want[i]), tol)
            << names[i] << ", dtype " << dt << ", mask " << (mask.defined() ? mask.size(0) : 0);
      }
    }
  }
}

TEST(FusedOps, PackSpansPutsEveryRecordWholeInOneRow) {
  // Two rows of 128: records of 20, 12, 30, 18, 26 (+ 22 padding) and 40, 24, 30, 34.
  std::vector<Span> spans = {{0, 0, 20},   {0, 20, 12}, {0, 32, 30}, {0, 62, 18}, {0, 80, 26},
                             {0, 106, 22}, {1, 0, 40},  {1, 40, 24}, {1, 64, 30}, {1, 94, 34}};
  const int64_t T = 128;
  auto p = pack_spans(spans, 2, T, torch::kCPU);
  ASSERT_TRUE(p.has_value());
  EXPECT_GE(p->length, 40);
  EXPECT_LT(p->chunks * p->length * p->length, 2 * T * T * 2 / 3);
  auto gather = p->gather, scatter = p->scatter;
  // Every token has one slot, and that slot holds it.
  for (int64_t t = 0; t < 2 * T; ++t) EXPECT_EQ(gather[scatter[t].item<int64_t>()].item<int64_t>(), t);
  // A slot attends to earlier slots of its own record only.
  auto blocked = p->blocked.squeeze(1);
  auto record_of = [&](int64_t token) {
    for (size_t i = 0; i < spans.size(); ++i)
      if (token / T == spans[i].row && token % T >= spans[i].begin &&
          token % T < spans[i].begin + spans[i].length)
        return static_cast<int64_t>(i);
    return int64_t{-1};
  };
  for (int64_t a = 0; a < 2 * T; ++a)
    for (int64_t b = 0; b < 2 * T; ++b) {
      const int64_t sa = scatter[a].item<int64_t>(), sb = scatter[b].item<int64_t>();
      if (sa / p->length != sb / p->length) {
        EXPECT_NE(record_of(a), record_of(b));
        continue;
      }
      const bool may = record_of(a) == record_of(b) && b <= a;
      ASSERT_EQ(!blocked[sa / p->length][sa % p->length][sb % p->length].item<bool>(), may) << a << " " << b;
    }
  // One record filling the row: nothing to save.
  EXPECT_FALSE(pack_spans({{0, 0, 64}}, 1, 64, torch::kCPU).has_value());
}

TEST(FusedOps, DocumentSpansAreTheRunsOfEachRow) {
  auto ids = torch::tensor({0, 0, 1, 1, 1, -1, 2, 2, 2, 3, -1, -1}, torch::kInt64).view({2, 6});
  auto spans = document_spans(ids);
  ASSERT_EQ(spans.size(), 6u);  // [0,2) [2,5) [5,6) | [0,3) [3,4) [4,6)
  EXPECT_EQ(spans[2].row, 0);
  EXPECT_EQ(spans[2].begin, 5);
  EXPECT_EQ(spans[2].length, 1);
  EXPECT_EQ(spans[3].row, 1);
  EXPECT_EQ(spans[3].length, 3);
  EXPECT_EQ(spans[5].begin, 4);
  EXPECT_EQ(spans[5].length, 2);
  // An id in two separate runs of a row attends across the gap under the mask: no spans.
  EXPECT_TRUE(document_spans(torch::tensor({{0, 0, 1, 0}}, torch::kInt64)).empty());
}

TEST(FusedOps, PackedAttentionEqualsTheDocumentMaskForEveryFamily) {
  std::mt19937 rng(7);
  for (const auto& family : families()) {
    SCOPED_TRACE(family.name);
    auto lm = tiny_fp64(family, 9);
    const ModelConfig& config = lm->config();
    // Rows of 96: records of random lengths 1..30 and a padding tail.
    const int64_t B = 3, T = 96;
    auto seg = torch::full({B, T}, -1, torch::kInt64);
    auto pos = torch::zeros({B, T}, torch::kInt64);
    for (int64_t b = 0; b < B; ++b) {
      int64_t t = 0, id = 0;
      while (t < T - 10) {
        const int64_t len = std::min<int64_t>(T - 10 - t, 1 + static_cast<int64_t>(rng() % 30));
        for (int64_t j = 0; j < len; ++j) seg[b][t + j] = id, pos[b][t + j] = j;
        t += len, ++id;
      }
    }
    auto ids = torch::randint(0, config.vocab_size, {B, T}, torch::kInt64);
    auto run = [&](bool spans) {
      lm->zero_grad();
      ForwardOptions fo;
      fo.position_ids = pos;
      if (spans) {
        fo.spans = document_spans(seg);
      } else {
        fo.attention_mask = document_mask(seg);
      }
      auto logits = lm->forward(ids, fo);
      logits.index({seg.ge(0)}).pow(2).mean().backward();
      std::vector<torch::Tensor> grads;
      for (const auto& p : lm->parameters())
        grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
      return std::make_pair(logits.detach(), grads);
    };
    auto [mask_logits, mask_grads] = run(false);
    auto [span_logits, span_grads] = run(true);
    auto real = seg.ge(0);
    EXPECT_LE(max_rel(span_logits.index({real}), mask_logits.index({real})), 1e-12);
    for (size_t i = 0; i < mask_grads.size(); ++i)
      if (mask_grads[i].defined()) {
        EXPECT_LE(max_rel(span_grads[i], mask_grads[i]), 1e-10) << i;
      }
  }
}

TEST(FusedOps, SpansMustCoverTheRowsInOrder) {
  auto lm = build_model(tiny_config("llama"), torch::TensorOptions().dtype(torch::kFloat32));
  auto ids = torch::zeros({1, 8}, torch::kInt64);
  ForwardOptions fo;
  fo.spans = {{0, 0, 3}, {0, 4, 4}};  // position 3 missing
  EXPECT_THROW(lm->forward(ids, fo), Error);
  fo.spans = {{0, 0, 8}};
  fo.attention_mask = torch::ones({1, 8}, torch::kBool);
  EXPECT_THROW(lm->forward(ids, fo), Error);
}

// LoRA gradients through a whole tiny model of every family (fp64 throughout, packed rows
// regrouped for attention, the RMSNorm/RoPE/LoRA nodes, MoE routing) against central differences.
TEST(FusedOps, LoraGradientsOfEveryFamilyMatchFiniteDifferences) {
  for (const auto& family : families()) {
    SCOPED_TRACE(family.name);
    auto lm = tiny_fp64(family, 13);
    const ModelConfig& config = lm->config();
    peft::LoraConfig lc;
    lc.r = 2;
    lc.lora_alpha = 4;
    lc.target_modules = {"all-linear"};
    for (auto& p : lm->parameters()) p.set_requires_grad(false);
    peft::inject_lora(*lm, lc);
    lm->to(torch::kFloat64);  // the factors too (created in fp32, as PEFT does)
    std::vector<torch::Tensor> factors;
    {
      torch::NoGradGuard no_grad;
      for (const auto& p : lm->named_parameters())
        if (p.key().find("lora_") != std::string::npos) {
          if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.05);
          factors.push_back(p.value());
        }
    }
    ASSERT_FALSE(factors.empty());
    // One row of 48 tokens holding six records; the regrouping applies.
    const int64_t T = 48;
    std::vector<int64_t> seg_v, pos_v;
    int64_t id = 0;
    for (int64_t len : {9, 7, 8, 6, 10, 8}) {
      for (int64_t j = 0; j < len; ++j) seg_v.push_back(id), pos_v.push_back(j);
      ++id;
    }
    auto seg = torch::tensor(seg_v, torch::kInt64).view({1, T});
    auto pos = torch::tensor(pos_v, torch::kInt64).view({1, T});
    ForwardOptions fo;
    fo.position_ids = pos;
    fo.spans = document_spans(seg);
    ASSERT_TRUE(pack_spans(fo.spans, 1, T, torch::kCPU).has_value());
    torch::manual_seed(17);
    auto ids = torch::randint(0, config.vocab_size, {1, T}, torch::kInt64);
    // The final hidden states (the logits are handed out in fp32 whatever the model's dtype).
    auto probe = torch::randn({1, T, config.hidden_size}, torch::kFloat64);
    auto loss = [&] { return (lm->hidden_states(ids, fo) * probe).sum(); };
    lm->zero_grad();
    loss().backward();
    torch::NoGradGuard no_grad;
    int checked = 0;
    for (size_t f = 0; f < factors.size(); f += std::max<size_t>(1, factors.size() / 6)) {
      auto flat = factors[f].view({-1});
      for (int64_t i : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
        const double orig = flat[i].item<double>(), eps = 1e-6;
        flat[i] = orig + eps;
        const double up = loss().item<double>();
        flat[i] = orig - eps;
        const double down = loss().item<double>();
        flat[i] = orig;
        const double numeric = (up - down) / (2 * eps),
                     analytic = factors[f].grad().view({-1})[i].item<double>();
        EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
            << "factor " << f << " entry " << i;
        ++checked;
      }
    }
    EXPECT_GE(checked, 12);
  }
}
