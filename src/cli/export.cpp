// `dsft export --model DIR [--adapter DIR] --format hf|peft|gguf -o OUT`: parses the options,
// calls dsft::exporter::run_export and prints what was written (docs/export.md).
#include "dsft/export/export.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "dsft/cli/commands.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::cli {
namespace {

struct ExportArgs {
  std::string model_dir;
  std::string adapter_dir;
  std::string format;
  std::string output;
  bool force = false;
  std::string max_shard_size = "5GB";
  std::string dtype = "auto";
  std::string gguf_type = "f16";
  bool lora_only = false;
  std::string name;
};

void run(const ExportArgs& a) {
  exporter::ExportOptions o;
  o.model_dir = a.model_dir;
  o.adapter_dir = a.adapter_dir;
  o.format = exporter::parse_export_format(a.format);
  o.output = a.output;
  o.force = a.force;
  try {
    o.max_shard_bytes = exporter::parse_size(a.max_shard_size);
  } catch (const Error& e) {
    throw UsageError(std::string("--max-shard-size: ") + e.what());
  }
  o.dtype = a.dtype;
  o.gguf_type = exporter::parse_gguf_out_type(a.gguf_type);
  o.lora_only = a.lora_only;
  o.name = a.name;

  const exporter::ExportReport r = exporter::run_export(o);
  std::string what = std::string(exporter::export_format_name(o.format)) + " export";
  if (o.format == exporter::ExportFormat::hf)
    what += ", " + std::to_string(r.shards) + (r.shards == 1 ? " shard" : " shards") + ", " + r.dtype;
  if (r.merged_layers > 0) what += ", adapter merged into " + std::to_string(r.merged_layers) + " layers";
  std::printf("%s written to %s (%s; %s)\n", what.c_str(), r.output.c_str(),
              util::format_bytes(static_cast<double>(r.bytes)).c_str(),
              (std::to_string(r.files.size()) + (r.files.size() == 1 ? " file" : " files")).c_str());
  for (const auto& f : r.files) std::printf("  %s\n", f.c_str());
  std::fflush(stdout);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Export a model and a LoRA adapter: hf (adapter merged, HF safetensors checkpoint), peft (the adapter "
      "with "
      "a model card) or gguf (llama.cpp / Ollama: merged model, LoRA adapter, Modelfile).\n"
      "OUT is a new directory; it is written atomically and never replaced without --force.");
  cmd->add_option("--model", a->model_dir, "Base model directory (config.json, *.safetensors, tokenizer)")
      ->required();
  cmd->add_option("--adapter", a->adapter_dir,
                  "LoRA adapter directory, or a training run directory holding adapter/ (required for peft)");
  cmd->add_option("--format", a->format, "hf, peft or gguf")
      ->required()
      ->check(CLI::IsMember({"hf", "peft", "gguf"}));
  cmd->add_option("-o,--output", a->output, "Output directory (must not exist unless --force)")->required();
  cmd->add_flag("--force", a->force, "Replace an existing output directory");
  cmd->add_option("--max-shard-size", a->max_shard_size,
                  "hf: largest safetensors shard (e.g. 5GB, 500MB, 2GiB)")
      ->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "hf: dtype of the weights (auto keeps the checkpoint's)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"}));
  cmd->add_option("--gguf-type", a->gguf_type, "gguf: weight encoding")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  cmd->add_flag("--lora-only", a->lora_only,
                "gguf: write only <name>-lora.gguf (the adapter), no merged model");
  cmd->add_option("--name", a->name, "gguf: file name stem (default: the output directory's name)");
  cmd->callback([a] { run(*a); });
}

}  // namespace dsft::cli
