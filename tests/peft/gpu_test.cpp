// The same quantisation and LoRA layer on a GPU: identical NF4 codes and absmax as on the CPU,
// quantised storage follows .to(device), forward and backward agree with the CPU.
// Skips itself where no CUDA device is present.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dsft/peft/lora_linear.h"
#include "dsft/peft/quant.h"

namespace dsft::peft {
namespace {

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

TEST(Gpu, Nf4CodesEqualTheCpuOnes) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(40);
  torch::Tensor w = torch::randn({257, 320}) * 0.03;
  for (bool dq : {false, true}) {
    Nf4Weight cpu = nf4_quantize(w, {64, dq});
    Nf4Weight gpu = nf4_quantize(w.to(torch::kCUDA), {64, dq});
    EXPECT_TRUE(gpu.packed.is_cuda());
    EXPECT_TRUE(torch::equal(gpu.packed.cpu(), cpu.packed));
    if (dq) {
      EXPECT_TRUE(torch::equal(gpu.qabsmax.cpu(), cpu.qabsmax));
      EXPECT_TRUE(torch::equal(gpu.absmax2.cpu(), cpu.absmax2));
    } else {
      EXPECT_TRUE(torch::equal(gpu.absmax.cpu(), cpu.absmax));
    }
    EXPECT_TRUE(torch::equal(nf4_dequantize(gpu).cpu(), nf4_dequantize(cpu)));
  }
  Int8Weight i8c = int8_quantize(w), i8g = int8_quantize(w.to(torch::kCUDA));
  EXPECT_TRUE(torch::equal(i8g.q.cpu(), i8c.q));
}

TEST(Gpu, QuantisedLoraLayerMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  for (BaseFormat format : {BaseFormat::nf4, BaseFormat::int8}) {
    torch::manual_seed(41);
    Linear lin(128, 96);
    lin->quantize(format, {64, true});
    lin->enable_lora(LoraOptions().r(8).alpha(16));
    {
      torch::NoGradGuard no_grad;
      lin->lora_B->weight.normal_(0, 0.1);
    }
    torch::Tensor x = torch::randn({4, 7, 128});
    torch::Tensor xc = x.clone().requires_grad_(true);
    torch::Tensor y_cpu = lin(xc);
    y_cpu.sum().backward();
    torch::Tensor ga_cpu = lin->lora_A->weight.grad().clone();
    lin->zero_grad();

    lin->to(torch::kCUDA);
    EXPECT_EQ(lin->base_device().type(), torch::kCUDA);
    torch::Tensor xg = x.to(torch::kCUDA).requires_grad_(true);
    torch::Tensor y_gpu = lin(xg);
    y_gpu.sum().backward();
    EXPECT_TRUE(torch::allclose(y_gpu.cpu(), y_cpu, 1e-4, 1e-4)) << base_format_name(format);
    EXPECT_TRUE(torch::allclose(xg.grad().cpu(), xc.grad(), 1e-4, 1e-4));
    EXPECT_TRUE(torch::allclose(lin->lora_A->weight.grad().cpu(), ga_cpu, 1e-3, 1e-4));

    // bf16 compute on the GPU: the codes stay, the output follows the input dtype.
    lin->to(torch::kBFloat16);
    torch::Tensor yb = lin(x.to(torch::kCUDA, torch::kBFloat16));
    EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
    EXPECT_LT((yb.to(torch::kFloat32).cpu() - y_cpu).abs().max().item<double>(),
              0.05 * y_cpu.abs().max().item<double>());
    EXPECT_EQ(merged_weight(*lin).scalar_type(), torch::kBFloat16);
  }
}

}  // namespace
}  // namespace dsft::peft
