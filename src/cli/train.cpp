// `dsft train --config FILE [key=value ...] [--dry-run]`: parse the config (defaults < YAML < command
// line), then print the memory plan (--dry-run) or run dsft::train::run. A run stopped by Ctrl-C or
// SIGTERM writes a checkpoint and exits with code 130.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "dsft/cli/commands.h"
#include "dsft/train/config.h"
#include "dsft/train/memory_plan.h"
#include "dsft/train/trainer.h"

namespace dsft::cli {

namespace {
struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  bool dry_run = false;
};
}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Fine-tune a model (LoRA, QLoRA or full) as a YAML config says; key=value arguments override it.\n"
      "Writes output_dir/{config.yaml, metrics.jsonl, checkpoint-N/, adapter/ or model/}. A run that\n"
      "cannot fit in memory is refused before anything is loaded (see --dry-run). Ctrl-C or SIGTERM\n"
      "saves a checkpoint and exits with code 130; resume_from_checkpoint=auto continues it exactly.\n"
      "Example: dsft train --config configs/tiny.yaml max_steps=8 output_dir=runs/smoke");
  cmd->add_option("--config", args->config, "Training config (YAML)")->required();
  cmd->add_option("overrides", args->overrides, "key=value overrides of config keys");
  cmd->add_flag("--dry-run", args->dry_run,
                "Print the memory plan (from config.json only) and whether it fits; load and train nothing");
  cmd->callback([args] {
    const train::TrainConfig cfg = train::load_train_config(args->config, args->overrides);
    if (args->dry_run) {
      const train::MemoryPlan plan = train::plan_for(cfg);
      std::fputs(train::format_memory_plan(plan).c_str(), stdout);
      std::fflush(stdout);
      train::require_fits(plan, cfg);  // exit 1 with the reason when it does not fit
      return;
    }
    const train::TrainResult result = train::run(cfg);
    if (result.interrupted) {
      std::fflush(stdout);
      std::fflush(stderr);
      std::exit(130);  // 128 + SIGINT, as shells report an interrupted command
    }
  });
}

}  // namespace dsft::cli
