// dsft_bench_train_batches: writes what a `dsft train` run with the same config will see, so that a
// reference training loop outside dsft (scripts/bench/train_peer.py) trains on exactly the same
// inputs: the micro-batches in the order the data loader yields them, and the LoRA adapter as it is
// initialised before the first step (same seed, same order of random draws as dsft::train::run).
//
//   dsft_bench_train_batches <config.yaml> <out_dir> [key=value ...]
//
// <out_dir>/batches.bin: int64 count, then per micro-batch int64 B, int64 T, input_ids int64[B*T],
// labels_mask uint8[B*T], segment_ids int32[B*T], position_ids int64[B*T] (little-endian, row-major).
// <out_dir>/adapter0/: the initial PEFT adapter (lora finetuning only).
// <out_dir>/batches.json: steps, gradient accumulation, micro-batch count.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsft/model/load.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/peft/inject.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"
#include "dsft/train/config.h"
#include "dsft/train/dataset.h"
#include "dsft/train/trainer.h"
#include "dsft/util/error.h"

namespace {

template <typename T>
void put(std::ofstream& out, const T* data, size_t n) {
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(T)));
}

int run(int argc, char** argv) {
  using namespace dsft;
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <config.yaml> <out_dir> [key=value ...]\n", argv[0]);
    return 2;
  }
  const std::string out_dir = argv[2];
  std::vector<std::string> overrides(argv + 3, argv + argc);
  const train::TrainConfig cfg = train::load_train_config(argv[1], overrides);
  if (cfg.max_steps <= 0) throw Error("set max_steps: the batches of a fixed number of steps are written");
  if (!cfg.mix_dataset.empty()) throw Error("mix_dataset is not supported by the batch dump");
  std::filesystem::create_directories(out_dir);
  train::ensure_model(cfg);
  // dsft::train::run seeds torch first; tokenising and loading draw nothing, LoRA init draws next.
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));

  auto tok = text::load_tokenizer(cfg.model_name_or_path);
  const text::ChatTemplate tmpl = text::ChatTemplate::resolve(cfg.chat_template, cfg.model_name_or_path);
  train::DatasetOptions dopt;
  dopt.max_seq_length = cfg.max_seq_length;
  dopt.packing = cfg.packing;
  dopt.train_on_inputs = cfg.train_on_inputs;
  train::TokenizedDataset data = train::TokenizedDataset::build(cfg.train_files(), *tok, tmpl, dopt);
  const uint64_t data_seed = static_cast<uint64_t>(cfg.resolved_data_seed());
  if (cfg.val_size > 0) data = std::move(data.split(cfg.val_size, data_seed).first);
  const int32_t pad_id = tok->pad_id.value_or(tok->eos_id.value_or(0));
  train::DataLoader loader(data, cfg.per_device_train_batch_size, data_seed, pad_id);

  const int64_t micro = cfg.max_steps * cfg.gradient_accumulation_steps;
  std::ofstream out(out_dir + "/batches.bin", std::ios::binary | std::ios::trunc);
  if (!out) throw Error("cannot write " + out_dir + "/batches.bin");
  put(out, &micro, 1);
  int64_t tokens = 0, targets = 0;
  for (int64_t i = 0; i < micro; ++i) {
    const train::Batch b = loader.next();
    const size_t n = static_cast<size_t>(b.batch_size * b.seq_len);
    put(out, &b.batch_size, 1);
    put(out, &b.seq_len, 1);
    put(out, b.input_ids.data(), n);
    put(out, b.labels_mask.data(), n);
    put(out, b.segment_ids.data(), n);
    put(out, b.position_ids.data(), n);
    for (size_t k = 0; k < n; ++k) {
      tokens += b.segment_ids[k] >= 0;
      targets += b.labels_mask[k] && k % static_cast<size_t>(b.seq_len) != 0;
    }
  }
  out.close();
  if (!out) throw Error("writing " + out_dir + "/batches.bin failed");

  if (cfg.finetuning_type == train::FinetuningType::lora) {
    model::LoadOptions lo;
    lo.dtype = cfg.bf16 ? torch::kBFloat16 : torch::kFloat32;
    model::CausalLM lm = model::load_model(cfg.model_name_or_path, lo);
    peft::LoraConfig lc = train::lora_config_from(cfg);
    lc = peft::inject_lora(*lm, lc).config;
    peft::save_adapter(*lm, lc, out_dir + "/adapter0", cfg.model_name_or_path);
  }
  nlohmann::json meta = {{"max_steps", cfg.max_steps},
                         {"gradient_accumulation_steps", cfg.gradient_accumulation_steps},
                         {"micro_batches", micro},
                         {"tokens", tokens},
                         {"target_tokens", targets}};
  std::ofstream(out_dir + "/batches.json") << meta.dump(2) << "\n";
  std::printf("%lld micro-batches, %lld tokens (%lld targets) -> %s\n", static_cast<long long>(micro),
              static_cast<long long>(tokens), static_cast<long long>(targets), out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
