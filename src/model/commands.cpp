// run_forward / run_init: the model operations behind `dsft forward` and `dsft init`.
#include "dsft/model/commands.h"

#include <filesystem>

#include "dsft/io/safetensors.h"
#include "dsft/model/load.h"
#include "dsft/model/registry.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/strings.h"

namespace dsft::model {

namespace fs = std::filesystem;

namespace {
torch::Device parse_device(const std::string& name) {
  try {
    torch::Device d(name);
    if (d.is_cuda() && !torch::cuda::is_available())
      throw Error("device " + name + " requested but no CUDA GPU is available");
    return d;
  } catch (const c10::Error&) {
    throw Error("unknown device \"" + name + "\" (expected cpu, cuda or cuda:N)");
  }
}
}  // namespace

std::vector<int64_t> run_forward(const ForwardRequest& r) {
  LoadOptions lo;
  lo.dtype = parse_torch_dtype(r.dtype);
  lo.device = parse_device(r.device);
  auto input = io::SafetensorsFile::open(r.input);
  if (!input->contains("input_ids"))
    throw Error(r.input + " has no tensor named input_ids (expected I64 [batch, seq])");
  const io::TensorView& view = input->at("input_ids");
  if (view.dtype != io::DType::I64 || view.shape.size() != 2)
    throw Error(r.input + ": expected input_ids to be I64 [batch, seq] (got " + io::dtype_name(view.dtype) +
                " with " + std::to_string(view.shape.size()) + " dimensions)");
  auto ids = tensor_from_view(view).to(lo.device);
  auto lm = load_model(r.model_dir, lo);
  lm->eval();
  torch::NoGradGuard no_grad;
  auto logits = lm->forward(ids).to(torch::kCPU).contiguous();  // fp32 [B, T, V]
  io::TensorToWrite w;
  w.name = "logits";
  w.dtype = io::DType::F32;
  w.shape = logits.sizes().vec();
  w.data = logits.data_ptr();
  w.nbytes = logits.numel() * sizeof(float);
  io::write_safetensors(r.output, {w}, {{"format", "pt"}});
  return w.shape;
}

std::vector<std::string> preset_names(const std::string& arch) {
  std::vector<std::string> out;
  for (const auto& [name, text] : builtin_presets())
    if (util::starts_with(name, arch + "-")) out.push_back(name.substr(arch.size() + 1));
  return out;
}

ModelConfig run_init(const InitRequest& r) {
  const Family& family = find_family(r.arch);
  nlohmann::json j;
  std::string source;
  if (util::ends_with(r.preset, ".json") || r.preset.find('/') != std::string::npos) {
    source = r.preset;
    j = nlohmann::json::parse(util::read_file(r.preset), nullptr, false);
    if (j.is_discarded()) throw Error(r.preset + ": not valid JSON");
  } else {
    const std::string key = r.arch + "-" + r.preset;
    for (const auto& [name, text] : builtin_presets())
      if (name == key) j = nlohmann::json::parse(text);
    if (j.is_null())
      throw UsageError("no preset \"" + r.preset + "\" for --arch " + r.arch + " (available: " +
                       util::join(preset_names(r.arch), ", ") + ", or a path to a config.json)");
    source = "preset " + key;
  }
  if (j.contains("model_type") && j["model_type"] != r.arch)
    throw Error(source + " describes model_type " + j["model_type"].dump() + ", not --arch " + r.arch);
  j["model_type"] = r.arch;
  for (const auto& o : r.overrides) apply_override(j, o);
  ModelConfig config = parse_config(j, source);

  std::error_code ec;
  if (fs::exists(r.output_dir, ec)) {
    if (!fs::is_directory(r.output_dir, ec)) throw Error(r.output_dir + " exists and is not a directory");
    if (!fs::is_empty(r.output_dir, ec) && !r.force)
      throw Error(r.output_dir + " is not empty (pass --force to write into it anyway)");
  }
  const torch::Dtype dtype = parse_torch_dtype(r.dtype);
  // Built in fp32 (the initialisation draws fp32), written in the requested dtype.
  CausalLM lm = family.build(config, torch::TensorOptions().dtype(torch::kFloat32));
  init_weights(*lm, r.seed);
  SaveOptions so;
  so.dtype = dtype;
  save_model(*lm, r.output_dir, so);
  if (r.write_tokenizer) r.write_tokenizer(r.output_dir, lm->config());
  return lm->config();
}

}  // namespace dsft::model
