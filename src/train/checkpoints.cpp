// Checkpoint folders: trainer_state.json (de)serialisation, tensors <-> safetensors, atomic
// save by rename, listing, rotation and resume resolution.
#include "dsft/train/checkpoints.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/strings.h"

namespace dsft::train {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

const char kCheckpointPrefix[] = "checkpoint-";
const char kTempPrefix[] = ".tmp-checkpoint-";
const char kTrashPrefix[] = ".trash-checkpoint-";

std::string unique_suffix() {
  std::random_device rd;
  return std::to_string(::getpid()) + "-" + std::to_string(rd());
}

void fsync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// The step of a folder named checkpoint-<digits>, or -1.
int64_t step_of(const std::string& name) {
  if (!util::starts_with(name, kCheckpointPrefix)) return -1;
  const std::string digits = name.substr(sizeof(kCheckpointPrefix) - 1);
  if (digits.empty() || digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(dir / kTrainerStateFile, ec);
}

// Renames then deletes, so that a crash halfway through never leaves a checkpoint-* folder
// that looks complete but misses files.
void remove_dir_safely(const fs::path& dir) {
  const fs::path trash = dir.parent_path() / (kTrashPrefix + dir.filename().string() + "-" + unique_suffix());
  std::error_code ec;
  fs::rename(dir, trash, ec);
  if (ec) throw Error("cannot remove checkpoint " + dir.string() + ": " + ec.message());
  fs::remove_all(trash, ec);
}

io::DType to_io_dtype(const NamedParam& p) {
  switch (p.param.scalar_type()) {
    case torch::kFloat32: return io::DType::F32;
    case torch::kBFloat16: return io::DType::BF16;
    case torch::kFloat16: return io::DType::F16;
    case torch::kFloat64: return io::DType::F64;
    case torch::kInt64: return io::DType::I64;
    case torch::kInt32: return io::DType::I32;
    case torch::kInt16: return io::DType::I16;
    case torch::kInt8: return io::DType::I8;
    case torch::kUInt8: return io::DType::U8;
    case torch::kBool: return io::DType::BOOL;
    default:
      throw Error("cannot save tensor " + p.name + " of dtype " + std::string(c10::toString(p.param.scalar_type())));
  }
}

torch::ScalarType to_torch_dtype(io::DType d, const std::string& name, const std::string& path) {
  switch (d) {
    case io::DType::F32: return torch::kFloat32;
    case io::DType::BF16: return torch::kBFloat16;
    case io::DType::F16: return torch::kFloat16;
    case io::DType::F64: return torch::kFloat64;
    case io::DType::I64: return torch::kInt64;
    case io::DType::I32: return torch::kInt32;
    case io::DType::I16: return torch::kInt16;
    case io::DType::I8: return torch::kInt8;
    case io::DType::U8: return torch::kUInt8;
    case io::DType::BOOL: return torch::kBool;
    default:
      throw Error(path + ": tensor " + name + " has dtype " + io::dtype_name(d) + ", which checkpoints do not use");
  }
}

template <typename T>
T field(const json& j, const char* key, const std::string& source) {
  if (!j.contains(key)) throw Error(source + ": missing field '" + key + "'");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw Error(source + ": field '" + key + "' has the wrong type (" + j.at(key).dump() + ")");
  }
}

}  // namespace

std::string to_json(const TrainerState& s) {
  json rng_cuda = json::array();
  for (const auto& c : s.rng.cuda) rng_cuda.push_back(base64_encode(c));
  json j = {
      {"global_step", s.global_step},
      {"epoch", s.epoch},
      {"data", {{"epoch", s.data.epoch}, {"index", s.data.index}}},
      {"lr_scheduler_step", s.lr_scheduler_step},
      {"total_tokens", s.total_tokens},
      {"loss_scaler", {{"scale", s.loss_scaler.scale}, {"growth_tracker", s.loss_scaler.growth_tracker}}},
      {"early_stopping",
       {{"has_best", s.early_stopping.has_best},
        {"best", s.early_stopping.best},
        {"bad_evals", s.early_stopping.bad_evals}}},
      {"best_metric", s.best_metric ? json(*s.best_metric) : json(nullptr)},
      {"best_model_checkpoint", s.best_model_checkpoint},
      {"metric_for_best_model", s.metric_for_best_model},
      {"rng", {{"cpu", base64_encode(s.rng.cpu)}, {"cuda", rng_cuda}}},
      {"config_hash", s.config_hash},
  };
  return j.dump(2) + "\n";
}

TrainerState trainer_state_from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(source + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw Error(source + ": expected a JSON object");
  TrainerState s;
  s.global_step = field<int64_t>(j, "global_step", source);
  s.epoch = field<double>(j, "epoch", source);
  const json data = field<json>(j, "data", source);
  s.data.epoch = field<int64_t>(data, "epoch", source + " data");
  s.data.index = field<int64_t>(data, "index", source + " data");
  s.lr_scheduler_step = field<int64_t>(j, "lr_scheduler_step", source);
  s.total_tokens = field<int64_t>(j, "total_tokens", source);
  const json ls = field<json>(j, "loss_scaler", source);
  s.loss_scaler.scale = field<double>(ls, "scale", source + " loss_scaler");
  s.loss_scaler.growth_tracker = field<int64_t>(ls, "growth_tracker", source + " loss_scaler");
  const json es = field<json>(j, "early_stopping", source);
  s.early_stopping.has_best = field<bool>(es, "has_best", source + " early_stopping");
  s.early_stopping.best = field<double>(es, "best", source + " early_stopping");
  s.early_stopping.bad_evals = field<int64_t>(es, "bad_evals", source + " early_stopping");
  if (j.contains("best_metric") && !j.at("best_metric").is_null()) s.best_metric = field<double>(j, "best_metric", source);
  s.best_model_checkpoint = field<std::string>(j, "best_model_checkpoint", source);
  s.metric_for_best_model = field<std::string>(j, "metric_for_best_model", source);
  const json rng = field<json>(j, "rng", source);
  try {
    s.rng.cpu = base64_decode(field<std::string>(rng, "cpu", source + " rng"));
    for (const auto& c : field<std::vector<std::string>>(rng, "cuda", source + " rng")) s.rng.cuda.push_back(base64_decode(c));
  } catch (const Error& e) {
    throw Error(source + ": rng state is corrupt (" + e.what() + ")");
  }
  s.config_hash = field<std::string>(j, "config_hash", source);
  if (s.global_step < 0 || s.data.epoch < 0 || s.data.index < 0 || s.lr_scheduler_step < 0)
    throw Error(source + ": negative step or data position");
  return s;
}

void save_tensors(const std::string& path, const std::vector<NamedParam>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;
  std::vector<io::TensorToWrite> out;
  for (const auto& p : tensors) {
    if (!p.param.defined()) throw Error("cannot save tensor " + p.name + ": it is undefined");
    const io::DType dtype = to_io_dtype(p);
    torch::Tensor c = p.param.detach().to(torch::kCPU).contiguous();
    keep.push_back(c);
    out.push_back({p.name, dtype, c.sizes().vec(), c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size()});
  }
  io::write_safetensors(path, out, metadata);
}

std::map<std::string, torch::Tensor> load_tensors(const std::string& path) {
  auto file = io::SafetensorsFile::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, v] : file->tensors()) {
    const auto dtype = to_torch_dtype(v.dtype, name, path);
    out[name] = v.numel() == 0 ? torch::empty(v.shape, dtype)
                               : torch::from_blob(const_cast<uint8_t*>(v.data), v.shape, dtype).clone();
  }
  return out;
}

void load_into(const std::string& path, const std::vector<NamedParam>& params) {
  auto loaded = load_tensors(path);
  for (const auto& p : params) {
    auto it = loaded.find(p.name);
    if (it == loaded.end()) throw Error(path + " has no tensor " + p.name + " (was it saved with another configuration?)");
    if (it->second.sizes() != p.param.sizes() || it->second.scalar_type() != p.param.scalar_type())
      throw Error(path + ": tensor " + p.name + " does not match the model's parameter in shape or dtype");
  }
  if (loaded.size() != params.size()) {
    for (const auto& [name, t] : loaded) {
      bool known = std::any_of(params.begin(), params.end(), [&](const NamedParam& p) { return p.name == name; });
      if (!known) throw Error(path + " holds tensor " + name + ", which the model does not train in this run");
    }
  }
  torch::NoGradGuard no_grad;
  for (const auto& p : params) p.param.detach().copy_(loaded.at(p.name));
}

RunDirLock::RunDirLock(const std::string& output_dir) {
  util::make_private_dir(output_dir);
  const std::string path = (fs::path(output_dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw Error("output_dir " + output_dir + " is in use by another dsft train; wait for it or choose another output_dir");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] auto n = ::write(fd_, pid.data(), pid.size());
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

CheckpointManager::CheckpointManager(std::string output_dir) : dir_(std::move(output_dir)) {
  if (dir_.empty()) throw Error("output_dir is empty");
  util::make_private_dir(dir_);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (util::starts_with(name, kTempPrefix) || util::starts_with(name, kTrashPrefix)) fs::remove_all(e.path(), ec);
  }
}

std::string CheckpointManager::path_for(int64_t step) const {
  return (fs::path(dir_) / (kCheckpointPrefix + std::to_string(step))).string();
}

std::string CheckpointManager::save(const TrainerState& state, const std::vector<NamedParam>& weights,
                                    const AdamW* optimizer, const std::string& config_yaml,
                                    const std::function<void(const std::string&)>& extra) const {
  const fs::path final_dir = path_for(state.global_step);
  const fs::path tmp = fs::path(dir_) / (kTempPrefix + std::to_string(state.global_step) + "-" + unique_suffix());
  util::make_private_dir(tmp.string());
  try {
    save_tensors((tmp / kWeightsFile).string(), weights, {{"format", "pt"}});
    if (optimizer) optimizer->save((tmp / kOptimizerFile).string());
    util::write_file_atomic((tmp / kConfigFile).string(), config_yaml);
    if (extra) extra(tmp.string());
    // Whatever `extra` wrote is private too.
    for (const auto& e : fs::recursive_directory_iterator(tmp))
      ::chmod(e.path().c_str(), e.is_directory() ? 0700 : 0600);
    // Written last: its presence marks the folder complete.
    util::write_file_atomic((tmp / kTrainerStateFile).string(), to_json(state));
    fsync_dir(tmp.string());

    fs::path trash;
    std::error_code ec;
    if (fs::exists(final_dir, ec)) {
      trash = fs::path(dir_) / (kTrashPrefix + std::to_string(state.global_step) + "-" + unique_suffix());
      fs::rename(final_dir, trash);
    }
    fs::rename(tmp, final_dir);
    fsync_dir(dir_);
    if (!trash.empty()) fs::remove_all(trash, ec);
  } catch (const fs::filesystem_error& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw Error("cannot write checkpoint " + final_dir.string() + ": " + e.code().message());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  return final_dir.string();
}

std::vector<CheckpointInfo> CheckpointManager::list() const {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const int64_t step = step_of(e.path().filename().string());
    if (step >= 0 && is_complete(e.path())) out.push_back({step, e.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointInfo> CheckpointManager::latest() const {
  auto all = list();
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::vector<std::string> CheckpointManager::rotate(int64_t save_total_limit, const std::string& best_checkpoint) const {
  std::vector<std::string> deleted;
  auto all = list();
  if (save_total_limit <= 0 || static_cast<int64_t>(all.size()) <= save_total_limit) return deleted;
  auto same = [](const std::string& a, const std::string& b) {
    std::error_code ec;
    return !b.empty() && fs::equivalent(a, b, ec);
  };
  const bool best_present =
      std::any_of(all.begin(), all.end(), [&](const CheckpointInfo& c) { return same(c.path, best_checkpoint); });
  const bool best_is_newest = best_present && same(all.back().path, best_checkpoint);
  const int64_t protected_count = 1 + (best_present && !best_is_newest ? 1 : 0);
  const int64_t keep = std::max(save_total_limit, protected_count);
  int64_t remaining = static_cast<int64_t>(all.size());
  for (size_t i = 0; i + 1 < all.size() && remaining > keep; ++i) {
    if (same(all[i].path, best_checkpoint)) continue;
    remove_dir_safely(all[i].path);
    deleted.push_back(all[i].path);
    --remaining;
  }
  return deleted;
}

std::optional<CheckpointInfo> CheckpointManager::resolve_resume(const std::string& resume) const {
  if (resume.empty()) return std::nullopt;
  if (resume == "auto") return latest();
  const fs::path p(resume);
  if (!is_complete(p))
    throw Error("resume_from_checkpoint = " + resume + " is not a complete checkpoint (no folder with " +
                kTrainerStateFile + "); use a checkpoint-<step> folder or auto");
  int64_t step = step_of(p.filename().string());
  if (step < 0) step = read_trainer_state(resume).global_step;
  return CheckpointInfo{step, resume};
}

TrainerState read_trainer_state(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kTrainerStateFile).string();
  return trainer_state_from_json(util::read_file(path), path);
}

AdapterRun find_adapter_run(const std::string& adapter_dir) {
  AdapterRun run;
  if (adapter_dir.empty()) return run;
  fs::path dir = fs::absolute(adapter_dir).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();
  auto has = [](const fs::path& p) { return fs::is_regular_file(p); };
  if (has(dir.parent_path() / kConfigFile)) run.run_dir = dir.parent_path().string();
  else if (has(dir / kConfigFile)) run.run_dir = dir.string();
  if (has(dir / kConfigFile)) run.config_path = (dir / kConfigFile).string();
  else if (!run.run_dir.empty()) run.config_path = (fs::path(run.run_dir) / kConfigFile).string();
  if (!run.run_dir.empty() && has(fs::path(run.run_dir) / "metrics.jsonl"))
    run.metrics_path = (fs::path(run.run_dir) / "metrics.jsonl").string();
  return run;
}

}  // namespace dsft::train
