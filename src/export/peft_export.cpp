// The PEFT export: the adapter's own files (what PeftModel.from_pretrained reads) and a model card
// (README.md) that says what the adapter is: base model, LoRA settings, the data and
// hyper-parameters of the run that trained it (config.yaml) and its final metrics (metrics.jsonl).
// A run that is not there, or a value it does not record, is written as "unknown".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>

#include "dsft/export/export.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/text/chat_template.h"
#include "dsft/train/checkpoints.h"
#include "dsft/train/config.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/strings.h"
#include "export/export_internal.h"

namespace dsft::exporter {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

std::string resolve_adapter_dir(const std::string& path) {
  if (!fs::exists(path)) throw Error("adapter directory " + path + " does not exist");
  if (!fs::is_directory(path))
    throw Error("adapter path " + path + " is not a directory (expected adapter_config.json inside)");
  if (fs::is_regular_file(fs::path(path) / "adapter_config.json")) return path;
  const fs::path nested = fs::path(path) / "adapter";
  if (fs::is_regular_file(nested / "adapter_config.json")) return nested.string();
  throw Error("no adapter_config.json in " + path + " (nor in " + nested.string() +
              "): give the adapter directory a training run wrote");
}

namespace {

struct FinalMetrics {
  std::optional<int64_t> step;
  std::optional<double> epoch;
  std::optional<double> loss;
  std::optional<double> eval_loss;
  std::optional<double> eval_ppl;
  std::optional<int64_t> eval_step;
};

// The last values metrics.jsonl records, up to `max_step` (an adapter from checkpoint-N is the
// model as it was at step N).
FinalMetrics read_metrics(const std::string& path, std::optional<int64_t> max_step) {
  FinalMetrics m;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;  // torn line
    const int64_t step = j["step"].get<int64_t>();
    if (max_step && step > *max_step) continue;
    m.step = step;
    if (j.contains("epoch") && j["epoch"].is_number()) m.epoch = j["epoch"].get<double>();
    if (j.contains("loss") && j["loss"].is_number()) m.loss = j["loss"].get<double>();
    if (j.contains("eval_loss") && j["eval_loss"].is_number()) {
      m.eval_loss = j["eval_loss"].get<double>();
      m.eval_step = step;
      m.eval_ppl = j.contains("eval_ppl") && j["eval_ppl"].is_number() ? j["eval_ppl"].get<double>()
                                                                       : std::exp(*m.eval_loss);
    }
  }
  return m;
}

std::string fmt(std::optional<double> v, const char* spec = "%.4f") {
  if (!v) return "unknown";
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, *v);
  return buf;
}

std::string fmt_g(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string list_or_unknown(const std::vector<std::string>& items) {
  if (items.empty()) return "unknown";
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + ("`" + items[i] + "`");
  return s;
}

std::optional<int64_t> checkpoint_step(const std::string& adapter_dir) {
  static const std::regex re(R"(checkpoint-([0-9]+))");
  fs::path p = fs::absolute(adapter_dir).lexically_normal();
  for (int up = 0; up < 2 && !p.empty(); ++up, p = p.parent_path()) {
    std::smatch m;
    const std::string leaf = p.filename().string();
    if (std::regex_match(leaf, m, re)) return std::stoll(m[1].str());
  }
  return std::nullopt;
}

}  // namespace

std::string render_model_card(const std::string& adapter_dir, const std::string& base_model) {
  const peft::AdapterInfo info = peft::read_adapter_config(adapter_dir);
  const peft::LoraConfig& c = info.config;
  const std::string run_dir = train::find_adapter_run(adapter_dir).run_dir;

  std::optional<train::TrainConfig> tc;
  std::string config_note;
  if (!run_dir.empty()) {
    try {
      tc = train::load_train_config(run_dir + "/config.yaml");
    } catch (const Error& e) {
      config_note = std::string(" (") + run_dir + "/config.yaml could not be read: " + e.what() + ")";
    }
  }
  std::optional<FinalMetrics> metrics;
  if (!run_dir.empty() && fs::is_regular_file(run_dir + "/metrics.jsonl"))
    metrics = read_metrics(run_dir + "/metrics.jsonl", checkpoint_step(adapter_dir));

  const std::string base = base_model.empty() ? "unknown" : base_model;
  std::string md;
  md += "---\n";
  md += "base_model: " + json(base).dump() + "\n";
  md += "library_name: peft\n";
  md += "tags:\n  - lora\n  - dsft\n";
  md += "---\n\n";
  md += "# LoRA adapter for " + base + "\n\n";
  md += "A LoRA adapter trained with dsft. Load it on top of the base model it was trained on.\n\n";

  md += "## Base model\n\n";
  md += "- Base model: `" + base + "`\n";
  if (!info.base_model_name_or_path.empty() && info.base_model_name_or_path != base_model)
    md += "- Trained on: `" + info.base_model_name_or_path + "`\n";
  md += "\n## Adapter\n\n";
  md += "- Rank r: " + std::to_string(c.r) + ", lora_alpha: " + fmt_g(c.lora_alpha) + ", scale: " +
        fmt_g(c.use_rslora ? c.lora_alpha / std::sqrt(static_cast<double>(c.r)) : c.lora_alpha / c.r) +
        (c.use_rslora ? " (rsLoRA)" : "") + "\n";
  md += "- lora_dropout: " + fmt_g(c.lora_dropout) + ", bias: " + c.bias + "\n";
  md += "- Target modules: " +
        (c.target_modules_regex.empty() ? list_or_unknown(c.target_modules)
                                        : "`" + c.target_modules_regex + "` (regex)") +
        "\n";
  if (!c.modules_to_save.empty()) md += "- Trained in full: " + list_or_unknown(c.modules_to_save) + "\n";

  md += "\n## Training data\n\n";
  if (!tc) {
    md += "- Training run: unknown (no config.yaml found beside the adapter" + config_note + ")\n";
    md += "- Datasets: unknown\n";
  } else {
    md += "- Training run: `" + run_dir + "`\n";
    md += "- Datasets: " + list_or_unknown(tc->train_files()) + "\n";
    md += "- Validation: " +
          (!tc->validation_file.empty() ? "`" + tc->validation_file + "`"
           : tc->val_size > 0           ? fmt_g(tc->val_size * 100) + "% of the training records held out"
                                        : std::string("none")) +
          "\n";
    if (!tc->mix_dataset.empty())
      md += "- Mixed in: `" + tc->mix_dataset + "` (" + fmt_g(tc->mix_ratio * 100) + "% of samples)\n";
    md += "- Chat template: " +
          (tc->chat_template.empty() || tc->chat_template == "auto" ? std::string("the base model's own")
                                                                    : "`" + tc->chat_template + "`") +
          "\n";
    md += "- Loss on: " +
          std::string(tc->train_on_inputs ? "whole sequences" : "responses only (prompts masked)") + "\n";
  }

  md += "\n## Hyper-parameters\n\n";
  if (!tc) {
    md += "unknown\n";
  } else {
    md += "| key | value |\n| --- | --- |\n";
    md += "| finetuning_type | " + std::string(train::to_string(tc->finetuning_type)) + " |\n";
    if (tc->quantization != train::Quantization::none)
      md += "| quantization | " + std::string(train::to_string(tc->quantization)) + " |\n";
    md += "| learning_rate | " + fmt_g(tc->learning_rate) + " |\n";
    md += "| lr_scheduler_type | " + std::string(train::to_string(tc->lr_scheduler_type)) + " |\n";
    md += "| max_steps | " + (tc->max_steps > 0 ? std::to_string(tc->max_steps) : std::string("-")) + " |\n";
    md += "| num_train_epochs | " + fmt_g(tc->num_train_epochs) + " |\n";
    md += "| per_device_train_batch_size | " + std::to_string(tc->per_device_train_batch_size) + " |\n";
    md += "| gradient_accumulation_steps | " + std::to_string(tc->gradient_accumulation_steps) + " |\n";
    md += "| max_seq_length | " + std::to_string(tc->max_seq_length) + " |\n";
    md += "| packing | " + std::string(tc->packing ? "true" : "false") + " |\n";
    md += "| weight_decay | " + fmt_g(tc->weight_decay) + " |\n";
    md += "| seed | " + std::to_string(tc->seed) + " |\n";
    md += "| precision | " + std::string(tc->bf16 ? "bf16" : tc->fp16 ? "fp16" : "fp32") + " |\n";
  }

  md += "\n## Metrics\n\n";
  if (!metrics) {
    md +=
        "- Steps: unknown\n- Final training loss: unknown\n- Final eval loss: unknown\n- Final eval "
        "perplexity: unknown\n";
  } else {
    md += "- Steps: " + (metrics->step ? std::to_string(*metrics->step) : std::string("unknown")) +
          (metrics->epoch ? " (epoch " + fmt(metrics->epoch, "%.2f") + ")" : "") + "\n";
    md += "- Final training loss: " + fmt(metrics->loss) + "\n";
    md += "- Final eval loss: " + fmt(metrics->eval_loss) +
          (metrics->eval_step ? " (step " + std::to_string(*metrics->eval_step) + ")" : "") + "\n";
    md += "- Final eval perplexity: " + fmt(metrics->eval_ppl, "%.3f") + "\n";
  }

  md += "\n## Use\n\n";
  md += "```\ndsft generate --model " + base + " --adapter <this folder> --prompt \"...\"\n```\n\n";
  md += "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n";
  md += "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(" + json(base).dump() +
        "), \"<this folder>\")\n```\n";
  return md;
}

namespace detail {

std::string run_chat_template(const std::string& run_dir) {
  if (run_dir.empty()) return "";
  try {
    const train::TrainConfig tc = train::load_train_config(run_dir + "/config.yaml");
    if (tc.chat_template.empty() || tc.chat_template == "auto") return "";
    const auto names = text::ChatTemplate::builtin_names();
    if (std::find(names.begin(), names.end(), tc.chat_template) == names.end()) return "";
    return tc.chat_template;
  } catch (const Error&) {
    return "";  // an unreadable run config leaves the model's own template in place
  }
}

void write_peft(const CheckedInputs& in, const std::string& dir) {
  ordered_json cfg;
  const std::string cfg_path = in.adapter_dir + "/adapter_config.json";
  try {
    cfg = ordered_json::parse(util::read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(cfg_path + " is not valid JSON: " + e.what());
  }
  // PEFT loads the base from here: fill it in when the adapter does not say.
  const std::string base = in.base_model_name_or_path.empty()
                               ? fs::absolute(in.model_dir).lexically_normal().string()
                               : in.base_model_name_or_path;
  if (!cfg.contains("base_model_name_or_path") || !cfg["base_model_name_or_path"].is_string() ||
      cfg["base_model_name_or_path"].get<std::string>().empty())
    cfg["base_model_name_or_path"] = base;
  util::write_file_atomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
  copy_private(in.adapter_dir + "/adapter_model.safetensors", dir + "/adapter_model.safetensors");
  util::write_file_atomic(dir + "/README.md", render_model_card(in.adapter_dir, base));
}

}  // namespace detail

}  // namespace dsft::exporter
