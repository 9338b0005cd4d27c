// `dsft export`: a model (and a LoRA adapter) out of dsft in the form another tool loads.
//   hf   - the adapter merged into the base in fp32 and cast back to the checkpoint's dtype, as
//          an HF checkpoint (sharded safetensors + index, config, generation config, tokenizer,
//          chat template);
//   peft - the adapter alone (adapter_config.json + adapter_model.safetensors) with a model card;
//   gguf - the (merged) model as GGUF, the adapter as a GGUF LoRA, and an Ollama Modelfile.
// Every input is checked before anything is written; the output is built in a temporary folder
// beside OUT, synced and renamed into place, so OUT is either complete or absent.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dsft/export/gguf_export.h"

namespace dsft::exporter {

enum class ExportFormat { hf, peft, gguf };
ExportFormat parse_export_format(const std::string& name);  // "hf" | "peft" | "gguf"
const char* export_format_name(ExportFormat format);

// HF's spelling of sizes: "5GB" = 5e9 bytes, "500MB", "2GiB" = 2^31, "1000" = bytes.
// Throws dsft::Error for anything else or for 0.
size_t parse_size(const std::string& text);

// HF's default max_shard_size.
inline constexpr size_t kDefaultMaxShardBytes = 5'000'000'000;

struct ExportOptions {
  std::string model_dir;    // HF-format base model: config.json, *.safetensors, tokenizer
  std::string adapter_dir;  // PEFT adapter, or a training run directory holding adapter/; "" = none
  ExportFormat format = ExportFormat::hf;
  std::string output;  // OUT: the directory to create
  bool force = false;  // replace an existing OUT

  // hf
  size_t max_shard_bytes = kDefaultMaxShardBytes;
  std::string
      dtype;  // "" / "auto": each tensor keeps the checkpoint's dtype; else float32 | bfloat16 | float16

  // gguf
  GgufOutType gguf_type = GgufOutType::f16;
  bool lora_only = false;  // only <name>-lora.gguf (the adapter as a GGUF LoRA); no merged model
  std::string name;        // file stem of the GGUF files; default: OUT's folder name
};

struct ExportReport {
  std::string output;              // OUT
  std::vector<std::string> files;  // written, relative to OUT, sorted
  size_t bytes = 0;                // total size of the files
  std::vector<std::string> warnings;
  int64_t merged_layers = 0;  // layers whose adapter went into the weights (hf, gguf)
  size_t shards = 0;          // hf: safetensors files
  std::string dtype;          // hf: dtype of the weights ("bfloat16", or "mixed")
};

// Checks everything, builds OUT atomically and reports what it wrote. Throws dsft::Error (nothing
// written, nothing left behind) on any bad input or failure.
ExportReport run_export(const ExportOptions& options);

// --- the pieces (used by run_export; writing into an existing, empty, private directory) -----

// Where an adapter lives: `path` itself when it holds adapter_config.json, else path/adapter
// (a training run directory). Throws dsft::Error naming what is missing.
std::string resolve_adapter_dir(const std::string& path);

// The PEFT model card (README.md) for an adapter: base model, adapter settings, training data
// and hyper-parameters from the run's config.yaml, final metrics from its metrics.jsonl;
// "unknown" wherever the run does not say.
std::string render_model_card(const std::string& adapter_dir, const std::string& base_model);

}  // namespace dsft::exporter
