// `dsft init --arch A --preset P -o DIR`: a randomly initialised model in HF format, for tests,
// demos and benchmarks.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "dsft/cli/commands.h"
#include "dsft/model/commands.h"
#include "dsft/util/strings.h"

namespace dsft::cli {

void add_init_command(CLI::App& app) {
  auto req = std::make_shared<model::InitRequest>();
  CLI::App* cmd = app.add_subcommand(
      "init",
      "Write a randomly initialised model (config.json, model.safetensors, generation_config.json).\n"
      "Presets come from configs/presets/<arch>-<preset>.json (compiled in); --set overrides any config "
      "key,\n"
      "e.g. --set vocab_size=32000 --set rope_scaling.factor=8. No tokenizer files are written.");
  cmd->add_option("--arch", req->arch, "llama, qwen2, deepseek_v2 or deepseek_v3")
      ->required()
      ->check(CLI::IsMember({"llama", "qwen2", "deepseek_v2", "deepseek_v3"}));
  cmd->add_option("--preset", req->preset, "tiny, small (all), 1gb (llama), or a path to a config.json")
      ->capture_default_str();
  cmd->add_option("-o,--output", req->output_dir, "Output directory")->required();
  cmd->add_option("--seed", req->seed, "Random seed")->capture_default_str();
  cmd->add_option("--dtype", req->dtype, "Weight dtype: bfloat16 (bf16) or float32 (fp32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "fp32", "bfloat16", "bf16"}));
  cmd->add_option("--set", req->overrides, "key=value config override (repeatable)");
  cmd->add_flag("--force", req->force, "Write into a non-empty output directory");
  cmd->callback([req] {
    auto config = model::run_init(*req);
    std::fprintf(stderr, "wrote a random %s model (%lld layers, hidden %lld, vocab %lld) to %s\n",
                 config.model_type.c_str(), static_cast<long long>(config.num_hidden_layers),
                 static_cast<long long>(config.hidden_size), static_cast<long long>(config.vocab_size),
                 req->output_dir.c_str());
  });
}

}  // namespace dsft::cli
