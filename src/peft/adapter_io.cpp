// PEFT adapter directories: adapter_config.json (PEFT's LoraConfig.to_dict fields) and
// adapter_model.safetensors; loading checks everything before it changes the model.
#include "dsft/peft/adapter_io.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "dsft/io/safetensors.h"
#include "dsft/peft/inject.h"
#include "dsft/peft/lora_linear.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace dsft::peft {

namespace {

using nlohmann::json;

const std::string kPrefix = "base_model.model.";
const std::string kSuffixA = ".lora_A.weight";
const std::string kSuffixB = ".lora_B.weight";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

io::DType to_io_dtype(torch::Dtype dtype, const std::string& name) {
  switch (dtype) {
    case torch::kFloat32:
      return io::DType::F32;
    case torch::kBFloat16:
      return io::DType::BF16;
    case torch::kFloat16:
      return io::DType::F16;
    case torch::kFloat64:
      return io::DType::F64;
    default:
      throw dsft::Error("cannot save " + name + ": dtype " + c10::toString(dtype) +
                        " is not a floating dtype safetensors adapters use");
  }
}

bool to_torch_dtype(io::DType dtype, torch::Dtype* out) {
  switch (dtype) {
    case io::DType::F32:
      *out = torch::kFloat32;
      return true;
    case io::DType::BF16:
      *out = torch::kBFloat16;
      return true;
    case io::DType::F16:
      *out = torch::kFloat16;
      return true;
    case io::DType::F64:
      *out = torch::kFloat64;
      return true;
    default:
      return false;
  }
}

torch::Tensor view_to_tensor(const io::TensorView& view) {
  torch::Dtype dtype = torch::kFloat32;
  to_torch_dtype(view.dtype, &dtype);  // checked by the caller
  // The mapping is read-only and goes away with the file: copy out at once.
  return torch::from_blob(const_cast<uint8_t*>(view.data), view.shape, torch::TensorOptions().dtype(dtype))
      .clone();
}

// Field readers that name the file and field in their errors.
struct Fields {
  const json& j;
  const std::string& source;

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }
  [[noreturn]] void fail(const char* key, const std::string& expected) const {
    throw dsft::Error(source + ": field " + key + " must be " + expected + " (got " + j.at(key).dump() + ")");
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    if (!j.at(key).is_number()) fail(key, "a number");
    return j.at(key).get<double>();
  }
  int64_t integer(const char* key) const {
    if (!has(key)) throw dsft::Error(source + ": field " + key + " is missing");
    const json& v = j.at(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) {
      return static_cast<int64_t>(v.get<double>());
    }
    fail(key, "an integer");
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j.at(key).is_boolean()) fail(key, "true or false");
    return j.at(key).get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j.at(key).is_string()) fail(key, "a string");
    return j.at(key).get<std::string>();
  }
  std::vector<std::string> strings(const char* key) const {
    std::vector<std::string> out;
    if (!has(key)) return out;
    if (!j.at(key).is_array()) fail(key, "a list of strings");
    for (const auto& v : j.at(key)) {
      if (!v.is_string()) fail(key, "a list of strings");
      out.push_back(v.get<std::string>());
    }
    return out;
  }
  // Options that change the function an adapter computes: refuse rather than ignore them.
  void require_unset(const char* key, const std::string& what) const {
    if (!has(key)) return;
    const json& v = j.at(key);
    const bool unset = (v.is_boolean() && !v.get<bool>()) || (v.is_array() && v.empty()) ||
                       (v.is_object() && v.empty()) || (v.is_string() && v.get<std::string>().empty());
    if (!unset) {
      throw dsft::Error(source + ": " + key + " = " + v.dump() + " (" + what + ") is not supported by dsft");
    }
  }
};

}  // namespace

json adapter_config_to_json(const LoraConfig& config, const std::string& base_model_name_or_path) {
  json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] =
      base_model_name_or_path.empty() ? json(nullptr) : json(base_model_name_or_path);
  j["r"] = config.r;
  // PEFT writes lora_alpha as an int; keep it one when it is.
  if (std::floor(config.lora_alpha) == config.lora_alpha && std::fabs(config.lora_alpha) < 1e15) {
    j["lora_alpha"] = static_cast<int64_t>(config.lora_alpha);
  } else {
    j["lora_alpha"] = config.lora_alpha;
  }
  j["lora_dropout"] = config.lora_dropout;
  if (!config.target_modules_regex.empty()) {
    j["target_modules"] = config.target_modules_regex;
  } else {
    j["target_modules"] = config.target_modules;
  }
  j["bias"] = config.bias;
  j["use_rslora"] = config.use_rslora;
  j["modules_to_save"] = config.modules_to_save.empty() ? json(nullptr) : json(config.modules_to_save);
  j["rank_pattern"] = json::object();
  for (const auto& [k, v] : config.rank_pattern) j["rank_pattern"][k] = v;
  j["alpha_pattern"] = json::object();
  for (const auto& [k, v] : config.alpha_pattern) j["alpha_pattern"][k] = v;
  j["fan_in_fan_out"] = false;
  j["init_lora_weights"] = true;
  j["inference_mode"] = true;
  j["revision"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["use_dora"] = false;
  j["auto_mapping"] = nullptr;
  j["peft_version"] = kPeftFormatVersion;
  return j;
}

LoraConfig adapter_config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw dsft::Error(source + ": expected a JSON object");
  Fields f{j, source};
  const std::string peft_type = f.string("peft_type", "");
  if (peft_type != "LORA") {
    throw dsft::Error(source + ": peft_type is '" + peft_type +
                      "'; only LoRA adapters (peft_type LORA) can be loaded");
  }
  f.require_unset("fan_in_fan_out", "GPT-2 style Conv1D weights");
  f.require_unset("use_dora", "DoRA");
  f.require_unset("lora_bias", "LoRA bias terms");
  f.require_unset("layers_to_transform", "adapters on some layers only");
  f.require_unset("exclude_modules", "module exclusion");
  f.require_unset("target_parameters", "adapters on raw parameters");

  LoraConfig c;
  c.r = f.integer("r");
  c.lora_alpha = f.number("lora_alpha", 8.0);
  c.lora_dropout = f.number("lora_dropout", 0.0);
  if (!f.has("target_modules")) {
    throw dsft::Error(source + ": target_modules is missing; dsft needs the adapted module names");
  }
  if (j.at("target_modules").is_string()) {
    c.target_modules_regex = j.at("target_modules").get<std::string>();
  } else {
    c.target_modules = f.strings("target_modules");
  }
  c.bias = f.string("bias", "none");
  c.use_rslora = f.boolean("use_rslora", false);
  c.modules_to_save = f.strings("modules_to_save");
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!f.has(key)) continue;
    if (!j.at(key).is_object()) f.fail(key, "an object");
    for (const auto& [k, v] : j.at(key).items()) {
      if (!v.is_number()) f.fail(key, "an object of numbers");
      if (std::string(key) == "rank_pattern") {
        c.rank_pattern[k] = v.get<int64_t>();
      } else {
        c.alpha_pattern[k] = v.get<double>();
      }
    }
  }
  try {
    c.validate();
  } catch (const dsft::Error& e) {
    throw dsft::Error(source + ": " + e.what());
  }
  return c;
}

void save_adapter(torch::nn::Module& root, const LoraConfig& config, const std::string& dir,
                  const std::string& base_model_name_or_path) {
  config.validate();
  const LoraConfig cfg = resolve_target_modules(root, config);
  std::vector<torch::Tensor> keep;  // owns the bytes the writer reads
  std::vector<io::TensorToWrite> tensors;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    keep.push_back(c);
    tensors.push_back({name, to_io_dtype(c.scalar_type(), name), c.sizes().vec(), c.data_ptr(),
                       static_cast<size_t>(c.numel()) * c.element_size()});
  };
  for_each_linear(root, [&](const std::string& path, LinearImpl& lin) {
    if (!lin.has_lora()) return;
    // The config is written beside the weights: they must agree or the file would not load.
    if (!cfg.targets(path)) {
      throw dsft::Error("layer " + path +
                        " has an adapter that the config's target_modules do not select; save "
                        "with the config the adapters were made with");
    }
    const LoraOptions& o = lin.lora_options();
    if (o.r() != cfg.rank_for(path) || o.alpha() != cfg.alpha_for(path) || o.use_rslora() != cfg.use_rslora) {
      throw dsft::Error("layer " + path + " has an adapter with r " + std::to_string(o.r()) + " and alpha " +
                        std::to_string(o.alpha()) + " but the config gives r " +
                        std::to_string(cfg.rank_for(path)) + " and alpha " +
                        std::to_string(cfg.alpha_for(path)));
    }
    add(kPrefix + path + kSuffixA, lin.lora_A->weight);
    add(kPrefix + path + kSuffixB, lin.lora_B->weight);
  });
  if (tensors.empty()) {
    throw dsft::Error("the model has no LoRA adapter to save; add one with inject_lora first");
  }
  std::set<std::string> saved;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    if (!cfg.saves(item.key())) continue;
    for (const auto& p : item.value()->named_parameters(/*recurse=*/true)) {
      const std::string name = kPrefix + item.key() + "." + p.key();
      if (saved.insert(name).second) add(name, p.value());
    }
  }
  util::make_private_dir(dir);
  io::write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  util::write_file_atomic(dir + "/adapter_config.json",
                          adapter_config_to_json(cfg, base_model_name_or_path).dump(2) + "\n");
}

AdapterInfo read_adapter_config(const std::string& dir) {
  const std::string path = dir + "/adapter_config.json";
  if (!util::path_exists(path)) {
    throw dsft::Error("no adapter_config.json in " + dir + ": not a PEFT adapter directory");
  }
  json j;
  try {
    j = json::parse(util::read_file(path));
  } catch (const json::exception& e) {
    throw dsft::Error(path + ": not valid JSON (" + e.what() + ")");
  }
  AdapterInfo info;
  info.config = adapter_config_from_json(j, path);
  if (j.contains("base_model_name_or_path") && j.at("base_model_name_or_path").is_string()) {
    info.base_model_name_or_path = j.at("base_model_name_or_path").get<std::string>();
  }
  return info;
}

AdapterInfo load_adapter(torch::nn::Module& root, const std::string& dir) {
  AdapterInfo info = read_adapter_config(dir);
  const LoraConfig cfg = resolve_target_modules(root, info.config);
  const std::string wpath = dir + "/adapter_model.safetensors";
  if (!util::path_exists(wpath)) {
    if (util::path_exists(dir + "/adapter_model.bin")) {
      throw dsft::Error(dir +
                        " holds adapter_model.bin (pickle), which dsft does not read; save "
                        "it again with PEFT's save_pretrained(safe_serialization=True)");
    }
    throw dsft::Error("no adapter_model.safetensors in " + dir);
  }
  auto file = io::SafetensorsFile::open(wpath);
  const std::string hint = info.base_model_name_or_path.empty()
                               ? std::string()
                               : " (the adapter was made for " + info.base_model_name_or_path + ")";

  std::map<std::string, LinearImpl*> linears;
  for_each_linear(root, [&](const std::string& path, LinearImpl& lin) { linears[path] = &lin; });
  auto params = root.named_parameters(/*recurse=*/true);
  auto modules = root.named_modules("", /*include_self=*/false);

  struct Pair {
    const io::TensorView* a = nullptr;
    const io::TensorView* b = nullptr;
  };
  std::map<std::string, Pair> lora;
  std::vector<std::pair<torch::Tensor, const io::TensorView*>> full;
  for (const auto& [name, view] : file->tensors()) {
    auto bad = [&](const std::string& why) { throw dsft::Error(wpath + ": tensor " + name + " " + why); };
    torch::Dtype dtype = torch::kFloat32;
    if (!to_torch_dtype(view.dtype, &dtype)) {
      bad(std::string("has dtype ") + io::dtype_name(view.dtype) + "; expected F32, BF16 or F16");
    }
    if (name.rfind(kPrefix, 0) != 0) {
      bad("does not start with " + kPrefix + ": not a PEFT adapter of a causal LM");
    }
    const std::string rest = name.substr(kPrefix.size());
    if (ends_with(rest, kSuffixA)) {
      lora[rest.substr(0, rest.size() - kSuffixA.size())].a = &view;
    } else if (ends_with(rest, kSuffixB)) {
      lora[rest.substr(0, rest.size() - kSuffixB.size())].b = &view;
    } else if (rest.find("lora_") != std::string::npos) {
      bad("is a kind of adapter weight dsft does not support (LoRA on linear layers only)");
    } else {
      const torch::Tensor* p = params.find(rest);
      if (p == nullptr) bad("names a parameter the model does not have" + hint);
      const auto dot = rest.rfind('.');
      if (dot == std::string::npos || !cfg.saves(rest.substr(0, dot))) {
        bad("is neither a LoRA weight nor part of modules_to_save");
      }
      if (p->sizes().vec() != view.shape) {
        bad("has shape " + shape_str(view.shape) + " but the model's parameter has " +
            shape_str(p->sizes().vec()) + hint);
      }
      full.emplace_back(*p, &view);
    }
  }
  if (lora.empty()) throw dsft::Error(wpath + " holds no LoRA weights");
  for (const auto& [path, pair] : lora) {
    auto it = linears.find(path);
    if (it == linears.end()) {
      const auto* m = modules.find(path);
      throw dsft::Error(wpath + ": adapter weights for " + path + ", but " +
                        (m ? "that module is a " + (*m)->name() + ", not a linear layer"
                           : std::string("the model has no such module")) +
                        hint);
    }
    if (!pair.a || !pair.b) {
      throw dsft::Error(wpath + ": " + path + " has lora_" + (pair.a ? "A" : "B") + " but no lora_" +
                        (pair.a ? "B" : "A"));
    }
    const LinearImpl& lin = *it->second;
    const int64_t in = lin.options().in_features(), out = lin.options().out_features();
    const int64_t r = pair.a->shape.empty() ? 0 : pair.a->shape[0];
    if (pair.a->shape != std::vector<int64_t>{r, in} || pair.b->shape != std::vector<int64_t>{out, r}) {
      throw dsft::Error(wpath + ": " + path + " has lora_A " + shape_str(pair.a->shape) + " and lora_B " +
                        shape_str(pair.b->shape) + " but the layer is " + std::to_string(in) + " -> " +
                        std::to_string(out) + " (expected [r, " + std::to_string(in) + "] and [" +
                        std::to_string(out) + ", r]): the adapter belongs to another base model" + hint);
    }
    if (r != cfg.rank_for(path)) {
      throw dsft::Error(wpath + ": " + path + " has rank " + std::to_string(r) +
                        " but adapter_config.json gives r " + std::to_string(cfg.rank_for(path)));
    }
    if (!cfg.targets(path)) {
      throw dsft::Error(wpath + ": holds weights for " + path +
                        ", which adapter_config.json's target_modules do not select");
    }
  }
  for (const auto& [path, lin] : linears) {
    if (!path.empty() && cfg.targets(path) && lora.count(path) == 0) {
      throw dsft::Error(wpath + " has no weights for " + path +
                        ", which adapter_config.json's target_modules select: the file is "
                        "incomplete or the adapter belongs to another base model" +
                        hint);
    }
  }

  // Everything checked: now change the model.
  torch::NoGradGuard no_grad;
  for (const auto& [path, pair] : lora) {
    LinearImpl& lin = *linears.at(path);
    LoraOptions options = lora_options_for(cfg, path);
    if (lin.has_lora()) options.dtype(lin.lora_A->weight.scalar_type());
    lin.enable_lora(options);
    lin.lora_A->weight.copy_(view_to_tensor(*pair.a));
    lin.lora_B->weight.copy_(view_to_tensor(*pair.b));
    info.modules.push_back(path);
  }
  for (auto& [param, view] : full) param.copy_(view_to_tensor(*view));
  mark_only_lora_as_trainable(root, cfg);
  info.config = cfg;
  return info;
}

}  // namespace dsft::peft
