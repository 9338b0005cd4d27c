// The checks every export starts with (base model against its config, adapter against the base)
// and the merged HF checkpoint: each adapted weight becomes W + scale * B A computed in fp32 and
// cast back to the checkpoint's dtype, streamed shard by shard (one shard's merged tensors in
// memory at a time; untouched tensors go from the mapped checkpoint straight to the file).
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "dsft/model/load.h"
#include "dsft/model/registry.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/text/chat_template.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/strings.h"
#include "export/export_internal.h"

namespace dsft::exporter::detail {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

const std::string kPrefix = "base_model.model.";
const std::string kSuffixA = ".lora_A.weight";
const std::string kSuffixB = ".lora_B.weight";

bool is_float(io::DType d) {
  return d == io::DType::F32 || d == io::DType::BF16 || d == io::DType::F16 || d == io::DType::F64;
}

// Whether an adapter made for `base` was probably made for the model in `model_dir`: the same
// directory, or (for a hub id or a path from another machine) the same last path component.
bool same_base(const std::string& base, const std::string& model_dir) {
  std::error_code ec;
  if (fs::exists(base, ec) && fs::equivalent(base, model_dir, ec)) return true;
  auto leaf = [](const std::string& p) {
    fs::path path = fs::path(p).lexically_normal();
    if (path.filename().empty()) path = path.parent_path();
    return path.filename().string();
  };
  return leaf(base) == leaf(fs::absolute(model_dir).string());
}

}  // namespace

std::vector<std::string> tokenizer_files(const std::string& model_dir) {
  std::vector<std::string> out;
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                           "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt"})
    if (fs::is_regular_file(fs::path(model_dir) / name)) out.push_back(name);
  return out;
}

void require_tokenizer(const std::string& model_dir) {
  if (!fs::is_regular_file(fs::path(model_dir) / "tokenizer.json") &&
      !fs::is_regular_file(fs::path(model_dir) / "tokenizer.model"))
    throw Error(
        "model directory " + model_dir +
        " has no tokenizer (tokenizer.json or tokenizer.model); an export without one cannot be used: "
        "copy the base model's tokenizer files there");
}

CheckedInputs check_inputs(const std::string& model_dir, const std::string& adapter_dir) {
  CheckedInputs in;
  in.model_dir = model_dir;
  if (!fs::is_directory(model_dir))
    throw Error("model directory " + model_dir + " does not exist (expected config.json and *.safetensors)");
  if (!fs::is_regular_file(fs::path(model_dir) / "config.json"))
    throw Error("model directory " + model_dir + " has no config.json: not an HF model directory");
  in.config = model::load_config(model_dir);
  in.checkpoint = std::make_shared<io::Checkpoint>(io::Checkpoint::open(model_dir));

  // A model on the meta device has every parameter's name and shape and no storage: loading the
  // checkpoint and the adapter into it runs the real checks without reading a weight.
  torch::NoGradGuard no_grad;
  model::CausalLM meta =
      model::build_model(in.config, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kMeta));
  model::load_weights(*meta, *in.checkpoint);
  if (adapter_dir.empty()) return in;

  in.adapter_dir = adapter_dir;
  const peft::AdapterInfo info = peft::load_adapter(*meta, adapter_dir);
  in.adapted = info.modules;
  in.base_model_name_or_path = info.base_model_name_or_path;
  if (!in.base_model_name_or_path.empty() && !same_base(in.base_model_name_or_path, model_dir))
    in.warnings.push_back("the adapter was trained on " + in.base_model_name_or_path + ", not " + model_dir +
                          "; its shapes fit this model, so it is applied anyway");
  return in;
}

void copy_private(const std::string& from, const std::string& to) {
  util::write_file_atomic(to, util::read_file(from));
}

HfWriteResult write_hf(const CheckedInputs& in, const HfWriteOptions& options, const std::string& dir) {
  HfWriteResult result;
  const io::Checkpoint& ckpt = *in.checkpoint;
  std::optional<torch::Dtype> cast;
  if (!options.dtype.empty() && options.dtype != "auto") cast = model::parse_torch_dtype(options.dtype);

  // The adapter: per adapted layer its factors and scale; modules_to_save replace whole tensors.
  std::shared_ptr<io::SafetensorsFile> adapter;
  peft::LoraConfig lora;
  struct Pair {
    const io::TensorView* a = nullptr;
    const io::TensorView* b = nullptr;
    double scale = 0.0;
  };
  std::map<std::string, Pair> merge;                     // "<path>.weight" -> factors
  std::map<std::string, const io::TensorView*> replace;  // checkpoint key -> saved tensor
  if (!in.adapter_dir.empty()) {
    adapter = io::SafetensorsFile::open(in.adapter_dir + "/adapter_model.safetensors");
    lora = peft::read_adapter_config(in.adapter_dir).config;
    for (const std::string& path : in.adapted) {
      Pair p;
      p.a = &adapter->at(kPrefix + path + kSuffixA);
      p.b = &adapter->at(kPrefix + path + kSuffixB);
      p.scale = lora.scale_for(path);
      merge[path + ".weight"] = p;
    }
    for (const auto& [name, view] : adapter->tensors()) {
      if (util::ends_with(name, kSuffixA) || util::ends_with(name, kSuffixB)) continue;
      replace[name.substr(kPrefix.size())] = &view;
    }
    for (const auto& [key, p] : merge)
      if (!ckpt.contains(key))
        throw Error("the adapter adapts " + key + ", which the checkpoint " + in.model_dir +
                    " does not hold (tied embeddings?); export the adapter with --format peft instead");
    for (const auto& [key, v] : replace)
      if (!ckpt.contains(key))
        throw Error("the adapter saves " + key + " in full, which the checkpoint " + in.model_dir +
                    " does not hold");
  }

  // Every output tensor: name, dtype, shape, and how its bytes are made.
  struct Item {
    std::string name;
    io::DType dtype;
    std::vector<int64_t> shape;
    size_t nbytes;
  };
  std::vector<Item> items;
  std::map<std::string, size_t> bytes_by_dtype;
  for (const std::string& name : ckpt.names()) {
    const io::TensorView& v = ckpt.at(name);
    io::DType d = v.dtype;
    // The router's correction bias stays fp32 as DeepSeek publishes it.
    if (cast && is_float(d) && !util::ends_with(name, "e_score_correction_bias"))
      d = model::to_io_dtype(*cast);
    const size_t nbytes = static_cast<size_t>(v.numel()) * io::dtype_size(d);
    items.push_back({name, d, v.shape, nbytes});
    if (is_float(d)) bytes_by_dtype[io::dtype_name(d)] += nbytes;
  }
  if (items.empty()) throw Error("checkpoint " + in.model_dir + " holds no tensors");

  // Shards as HF's save_pretrained cuts them: a new shard when the next tensor would overflow.
  std::vector<std::vector<size_t>> shards(1);
  size_t shard_bytes = 0, total = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (options.max_shard_bytes > 0 && !shards.back().empty() &&
        shard_bytes + items[i].nbytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += items[i].nbytes;
    total += items[i].nbytes;
  }

  auto shard_name = [&](size_t i) {
    if (shards.size() == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    return std::string(buf);
  };
  torch::NoGradGuard no_grad;
  ordered_json weight_map = ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    std::vector<torch::Tensor> keep;
    std::vector<io::TensorToWrite> tensors;
    for (size_t i : shards[s]) {
      const Item& item = items[i];
      const io::TensorView& v = ckpt.at(item.name);
      const torch::Dtype out_dtype =
          is_float(item.dtype) ? model::to_torch_dtype(item.dtype) : torch::kFloat32;
      const void* data = v.data;
      if (auto m = merge.find(item.name); m != merge.end()) {
        const torch::Tensor w = model::tensor_from_view(v).to(torch::kFloat32);
        const torch::Tensor a = model::tensor_from_view(*m->second.a).to(torch::kFloat32);
        const torch::Tensor b = model::tensor_from_view(*m->second.b).to(torch::kFloat32);
        // As peft::merged_weight computes it (the same rounding as merging inside dsft).
        keep.push_back((w + torch::mm(b, a) * m->second.scale).to(out_dtype).contiguous());
        data = keep.back().data_ptr();
        ++result.merged_layers;
      } else if (auto r = replace.find(item.name); r != replace.end()) {
        keep.push_back(model::tensor_from_view(*r->second).to(out_dtype).contiguous());
        data = keep.back().data_ptr();
      } else if (item.dtype != v.dtype) {
        keep.push_back(model::tensor_from_view(v).to(out_dtype).contiguous());
        data = keep.back().data_ptr();
      }
      tensors.push_back({item.name, item.dtype, item.shape, data, item.nbytes});
      weight_map[item.name] = shard_name(s);
    }
    io::write_safetensors(dir + "/" + shard_name(s), tensors, {{"format", "pt"}});
  }
  result.shards = shards.size();
  if (shards.size() > 1) {
    ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    util::write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  }

  // The dtype config.json announces: the one most bytes are in.
  std::string dominant;
  size_t most = 0;
  for (const auto& [name, n] : bytes_by_dtype)
    if (n > most) most = n, dominant = name;
  const std::string hf_dtype =
      dominant.empty() ? "float32"
                       : model::torch_dtype_name(model::to_torch_dtype(io::parse_dtype(dominant)));
  result.dtype = bytes_by_dtype.size() > 1 ? "mixed (mostly " + hf_dtype + ")" : hf_dtype;

  // config.json as published (unknown keys, architectures and auto_map kept), dtype updated.
  ordered_json config;
  try {
    config = ordered_json::parse(util::read_file(in.model_dir + "/config.json"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(in.model_dir + "/config.json is not valid JSON: " + e.what());
  }
  config["torch_dtype"] = hf_dtype;
  if (config.contains("quantization_config")) {
    // FP8 block-scaled weights are read dequantised; written back they are plain tensors.
    config.erase("quantization_config");
    result.warnings.push_back("the FP8 weights of " + in.model_dir + " are written dequantised as " +
                              hf_dtype);
  }
  util::write_file_atomic(dir + "/config.json", config.dump(2) + "\n");

  const fs::path src(in.model_dir);
  if (fs::is_regular_file(src / "generation_config.json")) {
    copy_private((src / "generation_config.json").string(), dir + "/generation_config.json");
  } else {
    ordered_json g = {{"_from_model_config", true}};
    if (in.config.bos_token_id) g["bos_token_id"] = *in.config.bos_token_id;
    if (in.config.eos_token_ids.size() == 1) g["eos_token_id"] = in.config.eos_token_ids[0];
    if (in.config.eos_token_ids.size() > 1) g["eos_token_id"] = in.config.eos_token_ids;
    util::write_file_atomic(dir + "/generation_config.json", g.dump(2) + "\n");
  }

  // Tokenizer files; the chat template a run trained with goes into tokenizer_config.json.
  for (const std::string& name : tokenizer_files(in.model_dir))
    if (name != "tokenizer_config.json") copy_private((src / name).string(), dir + "/" + name);
  if (fs::is_regular_file(src / "tokenizer_config.json") || !in.chat_template.empty()) {
    ordered_json tc = ordered_json::object();
    if (fs::is_regular_file(src / "tokenizer_config.json")) {
      try {
        tc = ordered_json::parse(util::read_file((src / "tokenizer_config.json").string()));
      } catch (const nlohmann::json::exception& e) {
        throw Error(in.model_dir + "/tokenizer_config.json is not valid JSON: " + e.what());
      }
    }
    if (!in.chat_template.empty()) tc["chat_template"] = text::ChatTemplate::builtin_source(in.chat_template);
    util::write_file_atomic(dir + "/tokenizer_config.json", tc.dump(2) + "\n");
  }
  // Modelling code that config.json's auto_map points at (DeepSeek-V2/V3 ship their own).
  for (const auto& entry : fs::directory_iterator(src))
    if (entry.is_regular_file() && entry.path().extension() == ".py")
      copy_private(entry.path().string(), dir + "/" + entry.path().filename().string());
  return result;
}

}  // namespace dsft::exporter::detail
