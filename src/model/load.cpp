// load_model / save_model: HF directories <-> CausalLM. Loading maps the checkpoint (no read into
// a buffer), wraps each view with from_blob and copies it once into the parameter, converting
// dtype and device on the way.
#include "dsft/model/load.h"

#include <chrono>
#include <map>
#include <regex>
#include <set>

#include "dsft/model/registry.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "dsft/util/strings.h"

namespace dsft::model {

namespace {

std::string shape_str(c10::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string list_some(const std::vector<std::string>& names, size_t max = 5) {
  std::vector<std::string> head(names.begin(), names.begin() + std::min(max, names.size()));
  std::string s = util::join(head, ", ");
  if (names.size() > max) s += " and " + std::to_string(names.size() - max) + " more";
  return s;
}

// Why a checkpoint key without a parameter may be skipped ("" when it may not).
std::string skip_reason(const ModelConfig& c, const std::string& name) {
  static const std::regex layer_re(R"(^model\.layers\.([0-9]+)\..*)");
  std::smatch m;
  if (std::regex_match(name, m, layer_re)) {
    const int64_t layer = std::stoll(m[1].str());
    if (layer >= c.num_hidden_layers && layer < c.num_hidden_layers + c.num_nextn_predict_layers)
      return "multi-token-prediction layer";
  }
  if (name == "lm_head.weight" && c.tie_word_embeddings) return "tied to embed_tokens";
  if (util::ends_with(name, ".rotary_emb.inv_freq")) return "recomputed from the config";
  return "";
}

}  // namespace

torch::Dtype to_torch_dtype(io::DType d) {
  switch (d) {
    case io::DType::BOOL:
      return torch::kBool;
    case io::DType::U8:
      return torch::kUInt8;
    case io::DType::I8:
      return torch::kInt8;
    case io::DType::I16:
      return torch::kInt16;
    case io::DType::I32:
      return torch::kInt32;
    case io::DType::I64:
      return torch::kInt64;
    case io::DType::F16:
      return torch::kFloat16;
    case io::DType::BF16:
      return torch::kBFloat16;
    case io::DType::F32:
      return torch::kFloat32;
    case io::DType::F64:
      return torch::kFloat64;
    default:
      break;
  }
  throw Error(std::string("tensors of dtype ") + io::dtype_name(d) + " cannot be used here");
}

io::DType to_io_dtype(torch::Dtype d) {
  switch (d) {
    case torch::kBool:
      return io::DType::BOOL;
    case torch::kUInt8:
      return io::DType::U8;
    case torch::kInt8:
      return io::DType::I8;
    case torch::kInt16:
      return io::DType::I16;
    case torch::kInt32:
      return io::DType::I32;
    case torch::kInt64:
      return io::DType::I64;
    case torch::kFloat16:
      return io::DType::F16;
    case torch::kBFloat16:
      return io::DType::BF16;
    case torch::kFloat32:
      return io::DType::F32;
    case torch::kFloat64:
      return io::DType::F64;
    default:
      break;
  }
  throw Error(std::string("tensors of dtype ") + c10::toString(d) + " cannot be written to safetensors");
}

torch::Dtype parse_torch_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return torch::kFloat16;
  throw Error("unknown dtype \"" + name + "\" (expected float32, bfloat16 or float16)");
}

std::string torch_dtype_name(torch::Dtype d) {
  if (d == torch::kBFloat16) return "bfloat16";
  if (d == torch::kFloat16) return "float16";
  if (d == torch::kFloat64) return "float64";
  return "float32";
}

torch::Tensor tensor_from_view(const io::TensorView& v) {
  // from_blob never writes; the const_cast only satisfies its signature.
  return torch::from_blob(const_cast<uint8_t*>(v.data), v.shape,
                          torch::TensorOptions().dtype(to_torch_dtype(v.dtype)));
}

void load_weights(CausalLMImpl& model, const io::Checkpoint& ckpt) {
  torch::NoGradGuard no_grad;
  const ModelConfig& c = model.config();
  std::map<std::string, torch::Tensor> targets;
  for (auto& [name, t] : model.state_tensors()) targets.emplace(name, t);

  std::vector<std::string> unexpected;
  std::set<std::string> filled;
  std::map<std::string, int> skipped;
  for (const std::string& name : ckpt.names()) {
    auto it = targets.find(name);
    if (it == targets.end()) {
      std::string why = skip_reason(c, name);
      if (why.empty()) {
        unexpected.push_back(name);
      } else {
        skipped[why]++;
      }
      continue;
    }
    const io::TensorView& view = ckpt.at(name);
    torch::Tensor& dst = it->second;
    if (c10::IntArrayRef(view.shape) != dst.sizes())
      throw Error("checkpoint " + ckpt.path() + ": tensor " + name + " has shape " + shape_str(view.shape) +
                  ", the model (from config.json) expects " + shape_str(dst.sizes()));
    dst.copy_(tensor_from_view(view));
    filled.insert(name);
  }
  std::vector<std::string> missing;
  for (const auto& [name, t] : targets)
    if (!filled.count(name)) missing.push_back(name);
  if (!unexpected.empty() || !missing.empty()) {
    std::string msg =
        "checkpoint " + ckpt.path() + " does not match its config.json (model_type " + c.model_type + "):";
    if (!missing.empty())
      msg += " missing " + std::to_string(missing.size()) + " tensors (" + list_some(missing) + ")";
    if (!unexpected.empty())
      msg += std::string(missing.empty() ? "" : ";") + " unexpected " + std::to_string(unexpected.size()) +
             " tensors (" + list_some(unexpected) + ")";
    throw Error(msg);
  }
  for (const auto& [why, n] : skipped)
    util::log_debug("skipped " + std::to_string(n) + " checkpoint tensors: " + why);
}

CausalLM load_model(const std::string& dir, const LoadOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  ModelConfig config = load_config(dir);
  io::Checkpoint ckpt = io::Checkpoint::open(dir);
  CausalLM model = build_model(config, torch::TensorOptions().dtype(options.dtype).device(options.device));
  load_weights(*model, ckpt);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  util::log_debug("loaded " + dir + " (" + util::format_bytes(static_cast<double>(ckpt.total_bytes())) +
                  ") in " + std::to_string(secs) + " s");
  return model;
}

void save_model(CausalLMImpl& model, const std::string& dir, const SaveOptions& options) {
  const Family& family = find_family(model.config().model_type);
  util::make_private_dir(dir);
  std::vector<torch::Tensor> keep;  // owns the CPU copies while writing
  std::vector<io::TensorToWrite> tensors;
  std::optional<torch::Dtype> written_dtype;
  for (auto& [name, t] : model.state_tensors()) {
    if (!matches_tensor_table(family, name))
      throw Error("cannot save " + name + " as part of a " + family.name +
                  " checkpoint (not an HF tensor name; merge or save adapters separately)");
    torch::Tensor cpu = t.detach();
    // The router's correction bias stays fp32 as DeepSeek publishes it.
    const bool keep_fp32 = util::ends_with(name, "e_score_correction_bias");
    if (options.dtype && !keep_fp32) cpu = cpu.to(*options.dtype);
    cpu = cpu.to(torch::kCPU).contiguous();
    if (!keep_fp32 && !written_dtype) written_dtype = cpu.scalar_type();
    keep.push_back(cpu);
    io::TensorToWrite w;
    w.name = name;
    w.dtype = to_io_dtype(cpu.scalar_type());
    w.shape = cpu.sizes().vec();
    w.data = cpu.data_ptr();
    w.nbytes = cpu.numel() * cpu.element_size();
    tensors.push_back(std::move(w));
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (options.max_shard_bytes > 0) {
    io::write_sharded_safetensors(dir, tensors, options.max_shard_bytes, metadata);
  } else {
    io::write_safetensors(dir + "/model.safetensors", tensors, metadata);
  }
  ModelConfig config = model.config();
  if (written_dtype) config.torch_dtype = torch_dtype_name(*written_dtype);
  save_config(config, dir);
  if (options.write_generation_config) {
    nlohmann::json g = {{"_from_model_config", true}};
    if (config.bos_token_id) g["bos_token_id"] = *config.bos_token_id;
    if (config.eos_token_ids.size() == 1) g["eos_token_id"] = config.eos_token_ids[0];
    if (config.eos_token_ids.size() > 1) g["eos_token_id"] = config.eos_token_ids;
    util::write_file_atomic(dir + "/generation_config.json", g.dump(2) + "\n");
  }
}

}  // namespace dsft::model
