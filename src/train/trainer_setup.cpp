// Before a run loads anything: the memory plan from config.json (or the model_init preset when the
// model does not exist yet), the refusal of runs that cannot fit, and the creation of a tiny random
// model with a SentencePiece tokenizer trained on the run's own data (smoke runs, demos).
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsft/model/commands.h"
#include "dsft/model/config.h"
#include "dsft/text/sentencepiece.h"
#include "dsft/text/tokenizer.h"
#include "dsft/train/trainer.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "dsft/util/strings.h"

namespace dsft::train {
namespace fs = std::filesystem;

namespace {

struct PresetName {
  std::string arch, preset;
};

// "llama-tiny" -> {llama, tiny}; "deepseek_v3-small" -> {deepseek_v3, small}.
PresetName split_preset(const std::string& model_init) {
  const auto dash = model_init.rfind('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 == model_init.size())
    throw Error("model_init = " + model_init + " is not <arch>-<preset> (e.g. llama-tiny)");
  return {model_init.substr(0, dash), model_init.substr(dash + 1)};
}

nlohmann::json preset_json(const std::string& model_init) {
  const PresetName p = split_preset(model_init);
  for (const auto& [name, text] : model::builtin_presets())
    if (name == p.arch + "-" + p.preset) return nlohmann::json::parse(text);
  std::vector<std::string> names;
  for (const auto& entry : model::builtin_presets()) names.push_back(entry.first);
  throw Error("model_init = " + model_init +
              " names no built-in preset (available: " + util::join(names, ", ") + ")");
}

}  // namespace

MemoryPlan plan_for(const TrainConfig& cfg) {
  const std::string device = resolve_device(cfg.device);
  if (cfg.fp16 && device == "cpu")
    throw Error(
        "fp16 = true needs a GPU: CPU matrix products have no float16 kernels; use bf16=true on the CPU "
        "(or device=cuda)");
  const fs::path dir(cfg.model_name_or_path);
  model::ModelConfig mc;
  if (fs::exists(dir / "config.json") || fs::is_regular_file(dir)) {
    mc = model::load_config(cfg.model_name_or_path);
  } else if (!cfg.model_init.empty()) {
    nlohmann::json j = preset_json(cfg.model_init);
    j["model_type"] = split_preset(cfg.model_init).arch;
    mc = model::parse_config(j, "preset " + cfg.model_init);
  } else {
    throw Error("model_name_or_path = " + cfg.model_name_or_path +
                " has no config.json (expected a model directory in HF format; set model_init, e.g. "
                "model_init=llama-tiny, to create a random tiny model there)");
  }
  return plan_memory(cfg, mc, device);
}

void require_fits(const MemoryPlan& plan, const TrainConfig& cfg) {
  if (plan.fits()) return;
  throw Error("this run needs about " + util::format_bytes(static_cast<double>(plan.total_bytes)) + " on " +
              plan.device + " but only " + util::format_bytes(static_cast<double>(plan.available_bytes)) +
              " is available (" + plan.available_source + ") for " + cfg.model_name_or_path +
              "; see `dsft train --dry-run` for the breakdown, and lower per_device_train_batch_size or "
              "max_seq_length, enable gradient_checkpointing, use bf16, or finetuning_type qlora");
}

bool ensure_model(const TrainConfig& cfg) {
  if (util::path_exists(cfg.model_name_or_path)) return false;
  if (cfg.model_init.empty())
    throw Error("model directory " + cfg.model_name_or_path +
                " does not exist (set model_name_or_path to a model in HF format, or model_init=llama-tiny "
                "to create a random tiny model there)");
  const PresetName p = split_preset(cfg.model_init);
  const nlohmann::json preset = preset_json(cfg.model_init);
  const std::vector<std::string> files = cfg.train_files();
  util::log_info("creating a random " + cfg.model_init + " model in " + cfg.model_name_or_path +
                 " with a SentencePiece tokenizer trained on " + files.front());

  // Built beside the target and renamed into place, so an interrupted creation leaves nothing
  // that looks like a model.
  const fs::path target(cfg.model_name_or_path);
  if (target.has_parent_path()) util::make_private_dir(target.parent_path().string());
  const std::string suffix = ".tmp-" + std::to_string(::getpid());
  const std::string tok_dir = cfg.model_name_or_path + suffix + "-tokenizer";
  const std::string model_dir = cfg.model_name_or_path + suffix;
  std::error_code ec;
  fs::remove_all(tok_dir, ec);
  fs::remove_all(model_dir, ec);
  try {
    text::SentencePieceTrainOptions so;
    so.input_jsonl = files.front();
    so.output_dir = tok_dir;
    so.vocab_size = preset.value("vocab_size", 512);
    so.chat_template =
        cfg.chat_template.empty() || cfg.chat_template == "auto" ? "chatml" : cfg.chat_template;
    text::train_sentencepiece(so);
    auto tok = text::load_tokenizer(tok_dir);

    model::InitRequest r;
    r.arch = p.arch;
    r.preset = p.preset;
    r.output_dir = model_dir;
    r.seed = static_cast<uint64_t>(cfg.seed);
    r.dtype = "float32";
    r.overrides.push_back("vocab_size=" + std::to_string(tok->vocab_size()));
    if (tok->bos_id) r.overrides.push_back("bos_token_id=" + std::to_string(*tok->bos_id));
    if (tok->eos_id) r.overrides.push_back("eos_token_id=" + std::to_string(*tok->eos_id));
    if (tok->pad_id) r.overrides.push_back("pad_token_id=" + std::to_string(*tok->pad_id));
    r.write_tokenizer = [&](const std::string& dir, const model::ModelConfig&) {
      for (const auto& entry : fs::directory_iterator(tok_dir))
        if (entry.is_regular_file())
          util::write_file_atomic((fs::path(dir) / entry.path().filename()).string(),
                                  util::read_file(entry.path().string()));
    };
    model::run_init(r);
    fs::rename(model_dir, target);
  } catch (...) {
    fs::remove_all(tok_dir, ec);
    fs::remove_all(model_dir, ec);
    throw;
  }
  fs::remove_all(tok_dir, ec);
  return true;
}

}  // namespace dsft::train
