// `dsft eval --model DIR [--adapter DIR] --data test.jsonl [--baseline] [--report report.html]`:
// perplexity (base vs tuned), task accuracy, A/B sheets and rating aggregation, speed, the report
// and gates. Exit 0 when every gate passes, 1 when one fails (the reason on stderr), 2 on usage
// errors.
#include "dsft/eval/eval.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "dsft/cli/commands.h"
#include "dsft/eval/gates.h"
#include "dsft/util/error.h"
#include "dsft/util/log.h"

namespace dsft::cli {

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<eval::EvalOptions>();
  std::string metrics_help = "Gate metrics:";
  for (const auto& [name, what] : eval::gate_metrics()) metrics_help += "\n  " + name + ": " + what;
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Evaluate a model and a LoRA adapter on held-out records: perplexity (base vs tuned with --baseline),\n"
      "QA accuracy (exact, normalized, contains, ROUGE-L; per category), multiple-choice accuracy, speed,\n"
      "blind A/B sheets (--ab-prompts) and their ratings (--ratings), a report (--report) and gates "
      "(--gate).\n"
      "Example: dsft eval --model runs/tiny-model --adapter runs/tiny/adapter --data test.jsonl --baseline "
      "\\\n"
      "           --report out/report.html --gate 'ppl_drop>=0.15'\n"
      "See docs/eval.md.");
  cmd->footer(metrics_help);
  cmd->add_option("--model", o->model_dir, "Base model directory (config.json, *.safetensors, tokenizer)");
  cmd->add_option(
      "--adapter", o->adapter_dir,
      "LoRA adapter directory; inside a training run its config.yaml sets template, window, masking");
  cmd->add_option(
      "--data", o->data_path,
      "Held-out JSONL: text / Alpaca / messages records (perplexity, QA) and multiple-choice records");
  cmd->add_flag("--baseline", o->baseline,
                "Also score the base model (adapter off) and print the relative change");
  cmd->add_option("--report", o->report_html,
                  "Write a self-contained HTML report here (and report.json beside it)");
  cmd->add_option("--report-json", o->report_json, "Write report.json here (default: beside --report)");
  cmd->add_option("--metrics", o->metrics_path,
                  "Training metrics.jsonl for the report's curves (default: the adapter's run dir)");
  cmd->add_option("--gate", o->gates,
                  "Pass/fail gates, e.g. 'ppl_drop>=0.15,exact_match>=0.6' (ops >=, >, <=, <, ==)");
  cmd->add_option("--chat-template", o->chat_template,
                  "Chat template family (default: the training run's, else the model's own)");
  cmd->add_option("--max-seq-length", o->max_seq_length,
                  "Perplexity window in tokens (default: the run's max_seq_length, else 2048)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--stride", o->stride, "Sliding-window stride for longer records (default: window / 2)")
      ->check(CLI::NonNegativeNumber);
  auto train_on_inputs = std::make_shared<std::string>();
  cmd->add_option("--train-on-inputs", *train_on_inputs,
                  "true: prompt tokens count for perplexity too (default: as the run trained)")
      ->check(CLI::IsMember({"true", "false"}));
  cmd->add_option("--batch-size", o->batch_size, "Windows per forward for perplexity")->capture_default_str();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Most tokens per generated answer (QA, A/B)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--limit", o->limit, "Score at most this many QA and multiple-choice items (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--predictions", o->predictions_path,
                  "Write every QA / multiple-choice prediction here (JSONL)");
  cmd->add_option("--speed-tokens", o->speed_tokens, "New tokens per speed measurement (0: no speed section)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--speed-prompts", o->speed_prompts, "Prompts the speed is measured on")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option(
      "--ab-prompts", o->ab_prompts,
      "Prompt templates with {placeholders}: JSONL {\"id\", \"template\"} or one template per line");
  cmd->add_option("--ab-vars", o->ab_vars,
                  "JSONL of placeholder values; each line with each template is one item");
  cmd->add_option("--ab-out", o->ab_out, "Directory for the A/B sheet (sheet.csv, sheet.html, key.json)");
  cmd->add_option("--seed", o->seed, "Seed of the A/B order")->capture_default_str();
  cmd->add_flag("--force", o->force, "Overwrite an existing A/B sheet in --ab-out");
  cmd->add_option("--ratings", o->ratings, "Filled rater sheets (at least three) to unblind and aggregate");
  cmd->add_option("--key", o->key_path, "key.json written with the A/B sheet");
  cmd->add_option("--dtype", o->dtype, "Compute dtype: float32, bfloat16 (float16 on GPUs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "fp32", "bfloat16", "bf16", "float16", "fp16"}));
  cmd->add_option("--device", o->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->callback([o, cmd, train_on_inputs] {
    if (auto* opt = cmd->get_parent() ? cmd->get_parent()->get_option_no_throw("--log-level") : nullptr;
        opt && opt->count())
      util::set_log_level(util::parse_log_level(opt->as<std::string>()));
    if (!train_on_inputs->empty()) o->train_on_inputs = *train_on_inputs == "true" ? 1 : 0;
    const eval::EvalOutcome out = eval::run_eval(*o);
    std::fputs(out.summary.c_str(), stdout);
    std::fflush(stdout);
    if (!out.gate_failure.empty()) throw Error(out.gate_failure);
  });
}

}  // namespace dsft::cli
