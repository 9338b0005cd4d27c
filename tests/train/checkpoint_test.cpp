// Gradient checkpointing: the same gradients as plain autograd (inputs and closed-over
// parameters), dropout replayed from the saved RNG state, no recomputation in evaluation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dsft/train/checkpoint.h"
#include "dsft/train/rng.h"
#include "dsft/util/error.h"

using namespace dsft::train;

namespace {

// An attention-like block: single-head self-attention with dropout and a residual, then a GELU
// MLP with dropout and a residual. Parameters live in the module; the block closes over it.
struct BlockImpl : torch::nn::Module {
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, up{nullptr}, down{nullptr};
  double p;
  BlockImpl(int64_t d, double dropout) : p(dropout) {
    q = register_module("q_proj", torch::nn::Linear(d, d));
    k = register_module("k_proj", torch::nn::Linear(d, d));
    v = register_module("v_proj", torch::nn::Linear(d, d));
    up = register_module("up_proj", torch::nn::Linear(d, 2 * d));
    down = register_module("down_proj", torch::nn::Linear(2 * d, d));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // x: [B, T, d]
    auto scores = torch::matmul(q(x), k(x).transpose(1, 2)) / std::sqrt(static_cast<double>(x.size(2)));  // [B, T, T]
    auto attn = torch::dropout(torch::softmax(scores, -1), p, is_training());
    auto h = x + torch::matmul(attn, v(x));
    return h + torch::dropout(down(torch::gelu(up(h))), p, is_training());
  }
};
TORCH_MODULE(Block);

struct Stack {
  std::vector<Block> blocks;
  Stack(int n, int64_t d, double dropout) {
    torch::manual_seed(7);
    for (int i = 0; i < n; ++i) blocks.emplace_back(d, dropout);
  }
  torch::Tensor forward(torch::Tensor x, bool use_checkpoint) {
    for (auto& b : blocks) {
      if (use_checkpoint)
        x = checkpoint([b](const torch::Tensor& in) mutable { return b->forward(in); }, x);
      else
        x = b->forward(x);
    }
    return x;
  }
  std::vector<torch::Tensor> grads() {
    std::vector<torch::Tensor> g;
    for (auto& b : blocks)
      for (auto& p : b->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
    return g;
  }
};

struct Result {
  std::vector<torch::Tensor> param_grads;
  torch::Tensor input_grad, loss, next_random;
};

Result run(bool use_checkpoint, bool input_requires_grad, double dropout) {
  Stack s(3, 16, dropout);
  torch::manual_seed(123);
  auto x = torch::randn({2, 5, 16});
  if (input_requires_grad) x.requires_grad_();
  torch::manual_seed(99);  // dropout masks come from here
  auto y = s.forward(x, use_checkpoint);
  auto loss = (y * y).mean();
  loss.backward();
  Result r{s.grads(), input_requires_grad ? x.grad().clone() : torch::Tensor(), loss.detach(), torch::rand({4})};
  return r;
}

void expect_same(const Result& a, const Result& b) {
  EXPECT_TRUE(torch::equal(a.loss, b.loss));
  ASSERT_EQ(a.param_grads.size(), b.param_grads.size());
  for (size_t i = 0; i < a.param_grads.size(); ++i) {
    ASSERT_TRUE(a.param_grads[i].defined()) << "parameter " << i << " got no gradient";
    ASSERT_TRUE(b.param_grads[i].defined()) << "parameter " << i << " got no gradient with checkpointing";
    EXPECT_TRUE(torch::allclose(a.param_grads[i], b.param_grads[i], 0, 1e-6)) << "parameter " << i;
  }
  if (a.input_grad.defined()) {
    EXPECT_TRUE(torch::allclose(a.input_grad, b.input_grad, 0, 1e-6));
  }
  // The global generator continues as if nothing had been recomputed.
  EXPECT_TRUE(torch::equal(a.next_random, b.next_random));
}

}  // namespace

TEST(GradientCheckpoint, SameGradientsAsPlainAutograd) { expect_same(run(false, true, 0.0), run(true, true, 0.0)); }

TEST(GradientCheckpoint, DropoutReplaysTheSameMasks) {
  Result plain = run(false, true, 0.2), ckpt = run(true, true, 0.2);
  expect_same(plain, ckpt);
  // And dropout is really active (otherwise this test would prove nothing).
  EXPECT_FALSE(torch::equal(run(false, true, 0.0).loss, plain.loss));
}

TEST(GradientCheckpoint, WithoutRngPreservationDropoutDiffers) {
  // The negative control: recomputing with a moved generator gives other masks, other gradients.
  Stack a(1, 16, 0.5), b(1, 16, 0.5);
  torch::manual_seed(1);
  auto x = torch::randn({2, 5, 16}, torch::requires_grad());
  torch::manual_seed(2);
  a.forward(x, false).pow(2).mean().backward();
  auto xb = x.detach().clone().requires_grad_();
  torch::manual_seed(2);
  auto y = checkpoint([blk = b.blocks[0]](const TensorList& in) mutable { return TensorList{blk->forward(in[0])}; },
                      TensorList{xb}, /*preserve_rng_state=*/false)[0];
  y.pow(2).mean().backward();
  EXPECT_FALSE(torch::allclose(x.grad(), xb.grad(), 0, 1e-6));
}

TEST(GradientCheckpoint, ParametersGetGradientsWhenInputsAreFrozen) {
  // As under LoRA: the embeddings feeding layer 0 do not require grad, but layer weights do.
  expect_same(run(false, false, 0.1), run(true, false, 0.1));
}

TEST(GradientCheckpoint, RecomputesInBackwardOnlyWhenTraining) {
  int calls = 0;
  auto w = torch::full({3}, 2.0, torch::requires_grad());
  auto fn = [&](const TensorList& in) {
    ++calls;
    return TensorList{in[0] * w, in[1]};  // a second, non-differentiable output passes through
  };
  auto x = torch::ones({3}, torch::requires_grad());
  auto ids = torch::arange(3);
  auto out = checkpoint(fn, {x, ids});
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(torch::equal(out[1], ids));
  out[0].sum().backward();
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(torch::equal(w.grad(), torch::ones({3})));
  EXPECT_TRUE(torch::equal(x.grad(), torch::full({3}, 2.0)));
  {
    torch::NoGradGuard no_grad;
    checkpoint(fn, {x, ids});
  }
  EXPECT_EQ(calls, 3);
}

TEST(Rng, SnapshotRoundTripsThroughBase64) {
  torch::manual_seed(5);
  torch::rand({3});
  RngSnapshot snap = capture_rng();
  auto expected = torch::rand({8});
  auto text = base64_encode(snap.cpu);
  torch::manual_seed(6);
  restore_rng(RngSnapshot{base64_decode(text), snap.cuda});
  EXPECT_TRUE(torch::equal(torch::rand({8}), expected));
  for (std::vector<uint8_t> bytes : {std::vector<uint8_t>{}, {1}, {1, 2}, {1, 2, 3}, {0, 255, 128, 7}})
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes);
  EXPECT_EQ(base64_encode({'M', 'a'}), "TWE=");
  EXPECT_THROW(base64_decode("TW?="), dsft::Error);
  EXPECT_THROW(base64_decode("TWE"), dsft::Error);
}
