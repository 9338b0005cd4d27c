// `dsft eval` as one function: perplexity of the base and the tuned model on held-out records,
// task accuracy (QA and multiple choice), A/B answer sheets for blind rating, the aggregation of
// returned ratings, speed, the report (report.json + report.html) and pass/fail gates.
// Torch-free header: the CLI and tests set options cheaply.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsft::eval {

struct EvalOptions {
  std::string model_dir;    // base model (HF format with tokenizer)
  std::string adapter_dir;  // LoRA adapter ("" = evaluate the base alone)
  std::string data_path;    // held-out JSONL (perplexity, QA, multiple choice)
  bool baseline = false;    // with an adapter: also score the base (adapter disabled)

  // Data path settings; unset values come from the adapter's run (config.yaml) when it has one.
  std::string chat_template;   // "" = the run's, else the model's own
  int64_t max_seq_length = 0;  // perplexity window; 0 = the run's, else 2048 (capped by the model)
  int64_t stride = 0;          // 0 = window / 2
  int train_on_inputs = -1;    // -1 = the run's (else false); 0/1 forces
  int64_t batch_size = 4;

  int64_t max_new_tokens = 64;  // QA and A/B answers
  int64_t limit = 0;            // most QA / multiple-choice items scored (0 = all)
  int64_t speed_tokens = 32;    // new tokens per speed run (0 = no speed section)
  int64_t speed_prompts = 3;
  std::string predictions_path;  // optional JSONL of every QA / multiple-choice prediction

  std::string dtype = "float32";
  std::string device = "auto";

  // A/B sheets.
  std::string ab_prompts;  // prompt templates (JSONL {"id", "template"} or one template per line)
  std::string ab_vars;     // JSONL of placeholder values, one item per line
  std::string ab_out;      // output directory for sheet.csv, sheet.html, key.json
  uint64_t seed = 0;
  bool force = false;  // overwrite an existing A/B sheet

  // Rater aggregation.
  std::vector<std::string> ratings;  // rater sheets (at least three)
  std::string key_path;              // key.json of the sheets

  // Report and gates.
  std::string report_html;   // "" = none
  std::string report_json;   // "" = beside report_html (same name, .json), or none
  std::string metrics_path;  // training metrics.jsonl ("" = the adapter's run dir's)
  std::vector<std::string> gates;
};

struct EvalOutcome {
  nlohmann::json report;     // the report.json content
  std::string gate_failure;  // "" when every gate passed (or none was given)
  std::string summary;       // what the CLI prints
};

// Runs what the options ask for. Throws dsft::UsageError for inconsistent options (exit 2) and
// dsft::Error for bad data, models or adapters (exit 1). Progress goes to the log.
EvalOutcome run_eval(const EvalOptions& options);

// The report.json path for an HTML report path: report.html -> report.json.
std::string json_path_beside(const std::string& html_path);

}  // namespace dsft::eval
