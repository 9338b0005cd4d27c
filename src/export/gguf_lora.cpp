// PEFT LoRA adapter -> llama.cpp GGUF adapter (what llama.cpp's convert_lora_to_gguf.py writes):
// general.type "adapter", adapter.type "lora", adapter.lora.alpha, and per adapted weight
// "<gguf name>.lora_a" (A [r, in] -> ne {in, r}) and ".lora_b" (B [out, r] -> ne {r, out}).
// llama.cpp scales by alpha / r, so rsLoRA's alpha / sqrt(r) is written as alpha * sqrt(r).
// B follows the base weight's row permutation (llama q/k), since (P B) A = P (B A).
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "dsft/export/gguf_export.h"
#include "dsft/model/config.h"
#include "dsft/model/load.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "export/gguf_plan.h"

namespace dsft::exporter {

namespace fs = std::filesystem;
using io::GgufValue;
using nlohmann::json;

GgufExportReport export_gguf_lora(const GgufLoraExportOptions& o) {
  detail::check_output(o.output_path, o.overwrite);
  const fs::path dir(o.adapter_dir);
  const fs::path cfg_path = dir / "adapter_config.json";
  if (!fs::exists(cfg_path)) throw Error("no adapter_config.json in " + o.adapter_dir + ": not a PEFT adapter directory");
  json cfg;
  try {
    cfg = json::parse(util::read_file(cfg_path.string()));
  } catch (const json::parse_error& e) {
    throw Error(cfg_path.string() + " is not valid JSON: " + e.what());
  }
  const std::string peft_type = cfg.value("peft_type", std::string("LORA"));
  if (peft_type != "LORA") throw Error(cfg_path.string() + " has peft_type " + peft_type + "; only LORA adapters export to GGUF");
  if (cfg.value("use_dora", false)) throw Error(cfg_path.string() + " is a DoRA adapter, which llama.cpp cannot apply; merge it instead");
  const std::string bias = cfg.value("bias", std::string("none"));
  if (bias != "none")
    throw Error(cfg_path.string() + " trains biases (bias \"" + bias + "\"), which a GGUF LoRA adapter cannot carry; merge it instead");
  if (cfg.contains("modules_to_save") && cfg["modules_to_save"].is_array() && !cfg["modules_to_save"].empty())
    throw Error(cfg_path.string() + " has modules_to_save, which a GGUF LoRA adapter cannot carry; merge it instead");
  if (!cfg.contains("r") || !cfg["r"].is_number_integer() || cfg["r"].get<int64_t>() <= 0)
    throw Error(cfg_path.string() + " has no positive integer r");
  const int64_t r = cfg["r"].get<int64_t>();
  const double alpha = cfg.contains("lora_alpha") && cfg["lora_alpha"].is_number() ? cfg["lora_alpha"].get<double>()
                                                                                    : static_cast<double>(r);
  const bool rslora = cfg.value("use_rslora", false);
  if (cfg.contains("rank_pattern") && cfg["rank_pattern"].is_object() && !cfg["rank_pattern"].empty())
    throw Error(cfg_path.string() + " has per-module ranks (rank_pattern), which llama.cpp's single alpha cannot scale; merge it instead");
  if (cfg.contains("alpha_pattern") && cfg["alpha_pattern"].is_object() && !cfg["alpha_pattern"].empty())
    throw Error(cfg_path.string() + " has per-module alphas (alpha_pattern), which llama.cpp's single alpha cannot scale; merge it instead");

  const fs::path weights = dir / "adapter_model.safetensors";
  if (!fs::exists(weights)) throw Error("no adapter_model.safetensors in " + o.adapter_dir);
  auto file = io::SafetensorsFile::open(weights.string());
  const model::ModelConfig c = model::load_config(o.base_model_dir);
  const std::string arch = gguf_architecture(c.model_type);

  // Base weights that a LoRA pair can stand beside: one source, same layout or a row permutation.
  std::map<std::string, detail::PlanItem> by_hf;
  for (auto& p : detail::plan_model(c))
    if (p.sources.size() == 1 && p.out_shape.size() == 2 && (!p.transform || p.unpermute_heads > 0))
      by_hf.emplace(p.sources[0], p);

  // Single-tensor "checkpoint" views for the lazy producers.
  auto ckpt = std::make_shared<io::Checkpoint>(io::Checkpoint::open(weights.string()));
  std::vector<detail::PlanItem> plan;
  const std::string prefix = "base_model.model.", a_suffix = ".lora_A.weight", b_suffix = ".lora_B.weight";
  for (const auto& [name, view] : file->tensors()) {
    auto ends = [&](const std::string& s) { return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
    if (ends(b_suffix)) continue;  // handled with its A
    if (!ends(a_suffix) || name.compare(0, prefix.size(), prefix) != 0)
      throw Error(weights.string() + " has tensor " + name + ", which is not a LoRA A/B pair (base_model.model.<module>.lora_A/B.weight)");
    const std::string module = name.substr(prefix.size(), name.size() - prefix.size() - a_suffix.size());
    const std::string base = module + ".weight", b_name = prefix + module + b_suffix;
    if (!file->contains(b_name)) throw Error(weights.string() + " has " + name + " without its " + b_name);
    auto it = by_hf.find(base);
    if (it == by_hf.end())
      throw Error("the adapter adapts " + base + ", which the " + arch + " GGUF layout has no single matrix for "
                  "(DeepSeek's kv_b_proj is split and experts are stacked there); merge this adapter into the model instead");
    const detail::PlanItem& w = it->second;
    const int64_t out = w.out_shape[0], in = w.out_shape[1];
    const auto& sa = view.shape;
    const auto& sb = file->at(b_name).shape;
    if (sa != std::vector<int64_t>{r, in} || sb != std::vector<int64_t>{out, r})
      throw Error("LoRA pair for " + base + " has A " + detail::shape_str(sa) + " and B " + detail::shape_str(sb) +
                  ", expected A [" + std::to_string(r) + ", " + std::to_string(in) + "] and B [" + std::to_string(out) +
                  ", " + std::to_string(r) + "] for r " + std::to_string(r) + " and the base model's config.json");
    const std::string gguf = w.gguf_name.substr(0, w.gguf_name.size() - 7);  // drop ".weight"
    detail::PlanItem pa, pb;
    pa.gguf_name = gguf + ".weight.lora_a";
    pa.sources = {name};
    pa.source_shapes = {sa};
    pa.out_shape = sa;
    pb.gguf_name = gguf + ".weight.lora_b";
    pb.sources = {b_name};
    pb.source_shapes = {sb};
    pb.out_shape = sb;
    if (w.unpermute_heads > 0) {
      const int64_t heads = w.unpermute_heads;
      pb.transform = [heads](const std::vector<torch::Tensor>& t) { return detail::unpermute_rope(t[0], heads); };
    }
    plan.push_back(pa);
    plan.push_back(pb);
  }
  if (plan.empty()) throw Error(weights.string() + " holds no LoRA tensors");

  io::GgufWriter w;
  w.set("general.architecture", GgufValue::string(arch));
  w.set("general.type", GgufValue::string("adapter"));
  w.set("general.name", GgufValue::string(o.name.empty() ? fs::absolute(dir).lexically_normal().filename().string() : o.name));
  w.set("adapter.type", GgufValue::string("lora"));
  w.set("adapter.lora.alpha", GgufValue::f32(static_cast<float>(rslora ? alpha * std::sqrt(static_cast<double>(r)) : alpha)));
  for (auto& p : plan) detail::add_planned(w, ckpt, std::move(p), o.out_type);
  w.write(o.output_path);
  GgufExportReport report;
  report.path = o.output_path;
  report.architecture = arch;
  report.n_tensors = w.tensors().size();
  report.bytes = w.file_size();
  return report;
}

}  // namespace dsft::exporter
