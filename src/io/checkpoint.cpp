// A checkpoint as published: one model.safetensors, or shards named by
// model.safetensors.index.json's weight_map (never guessed from file names), with DeepSeek-V3's
// block-scaled FP8 weights dequantised to BF16 at load.
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "io/json_strict.h"

namespace dsft::io {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kScaleSuffix = "_scale_inv";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A shard name from an index must stay inside the checkpoint directory.
bool safe_shard_name(const std::string& name) {
  if (name.empty() || fs::path(name).is_absolute()) return false;
  for (const auto& part : fs::path(name))
    if (part == "..") return false;
  return true;
}

}  // namespace

Checkpoint::Checkpoint(const Checkpoint& other)
    : path_(other.path_),
      files_(other.files_),
      index_(other.index_),
      owned_views_(other.owned_views_),
      owned_data_(other.owned_data_) {
  reindex_owned();
}

Checkpoint& Checkpoint::operator=(const Checkpoint& other) {
  if (this != &other) {
    path_ = other.path_;
    files_ = other.files_;
    index_ = other.index_;
    owned_views_ = other.owned_views_;
    owned_data_ = other.owned_data_;
    reindex_owned();
  }
  return *this;
}

// index_ points into owned_views_; a copied map has new nodes, so point at ours.
void Checkpoint::reindex_owned() {
  for (auto& [name, view] : owned_views_) index_[name] = &view;
}

void Checkpoint::add_file(std::shared_ptr<SafetensorsFile> file,
                          const std::vector<std::string>* names) {
  if (names == nullptr) {
    for (const auto& [name, view] : file->tensors()) {
      auto [it, inserted] = index_.emplace(name, &view);
      if (!inserted)
        throw Error("checkpoint " + path_ + ": tensor '" + name + "' appears in both " +
                    file->path() + " and another file");
    }
  } else {
    for (const auto& name : *names) {
      if (!file->contains(name))
        throw Error("checkpoint " + path_ + ": the index maps tensor '" + name + "' to " +
                    file->path() + ", which does not contain it");
      index_[name] = &file->at(name);
    }
  }
  files_.push_back(std::move(file));
}

void Checkpoint::dequantize_fp8() {
  std::vector<std::string> weights;
  for (const auto& [name, view] : index_) {
    if (!ends_with(name, kScaleSuffix)) continue;
    const std::string weight = name.substr(0, name.size() - std::strlen(kScaleSuffix));
    auto w = index_.find(weight);
    if (w == index_.end()) continue;  // a lone *_scale_inv tensor is just a tensor
    if (w->second->dtype != DType::F8_E4M3)
      throw Error("checkpoint " + path_ + ": tensor '" + name + "' is a block scale, but '" +
                  weight + "' is " + dtype_name(w->second->dtype) + ", expected F8_E4M3");
    weights.push_back(weight);
  }

  for (const auto& name : weights) {
    const TensorView& w = *index_.at(name);
    const std::string scale_name = name + kScaleSuffix;
    const TensorView& s = *index_.at(scale_name);
    const std::string tw = "checkpoint " + path_ + ": FP8 tensor '" + name + "'";
    if (w.shape.size() != 2)
      throw Error(tw + " has " + std::to_string(w.shape.size()) +
                  " dimensions, expected a 2-D matrix for 128x128 block scales");
    const int64_t rows = w.shape[0], cols = w.shape[1];
    const int64_t br = (rows + kFp8BlockSize - 1) / kFp8BlockSize;
    const int64_t bc = (cols + kFp8BlockSize - 1) / kFp8BlockSize;
    if (s.shape != std::vector<int64_t>{br, bc})
      throw Error(tw + " of shape [" + std::to_string(rows) + ", " + std::to_string(cols) +
                  "] needs '" + scale_name + "' of shape [" + std::to_string(br) + ", " +
                  std::to_string(bc) + "] (one scale per 128x128 block), got " +
                  std::to_string(s.shape.size()) + "-D with " + std::to_string(s.numel()) +
                  " elements");
    // Copy the scales out of the map: a file's data offsets need not be 4-byte aligned.
    std::vector<float> scales(static_cast<size_t>(br * bc));
    if (s.dtype == DType::F32) {
      std::memcpy(scales.data(), s.data, scales.size() * sizeof(float));
    } else if (s.dtype == DType::BF16) {
      for (size_t i = 0; i < scales.size(); ++i) {
        uint16_t b;
        std::memcpy(&b, s.data + 2 * i, 2);
        scales[i] = bf16_to_float(b);
      }
    } else {
      throw Error("checkpoint " + path_ + ": block scale '" + scale_name + "' is " +
                  dtype_name(s.dtype) + ", expected F32 or BF16");
    }

    auto buffer = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(rows * cols) * 2);
    // operator new aligns the buffer for any fundamental type, so uint16_t access is aligned.
    dequantize_fp8_e4m3_blockwise(w.data, scales.data(), rows, cols,
                                  reinterpret_cast<uint16_t*>(buffer->data()));
    TensorView view;
    view.name = name;
    view.dtype = DType::BF16;
    view.shape = w.shape;
    view.data = buffer->data();
    view.nbytes = buffer->size();
    owned_data_.push_back(std::move(buffer));
    auto& stored = owned_views_[name] = std::move(view);
    index_[name] = &stored;
    index_.erase(scale_name);
  }
}

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint ck;
  ck.path_ = path;
  std::error_code ec;
  auto open_index = [&](const fs::path& index_path) {
    const std::string where = "checkpoint index " + index_path.string();
    const std::string text = util::read_file(index_path.string());
    const auto j = detail::parse_json_strict(text.data(), text.data() + text.size(), where);
    if (!j.is_object()) throw Error(where + " is a JSON " + std::string(j.type_name()) + ", expected an object");
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object())
      throw Error(where + " has no \"weight_map\" object mapping tensor names to shard files");
    if (wm->empty()) throw Error(where + " has an empty weight_map");
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& [name, shard] : wm->items()) {
      if (!shard.is_string())
        throw Error(where + ": weight_map entry for tensor '" + name + "' is a JSON " +
                    shard.type_name() + ", expected a shard file name");
      const std::string s = shard.get<std::string>();
      if (!safe_shard_name(s))
        throw Error(where + ": weight_map entry for tensor '" + name + "' names shard '" + s +
                    "', which is not a file name inside the checkpoint directory");
      by_shard[s].push_back(name);
    }
    const fs::path dir = index_path.parent_path();
    for (const auto& [shard, names] : by_shard) {
      const fs::path shard_path = dir / shard;
      if (!fs::exists(shard_path, ec))
        throw Error(where + " maps " + std::to_string(names.size()) + " tensors (e.g. '" +
                    names.front() + "') to shard " + shard_path.string() +
                    ", which does not exist; the checkpoint is incomplete");
      ck.add_file(SafetensorsFile::open(shard_path.string()), &names);
    }
  };

  if (fs::is_directory(path, ec)) {
    const fs::path single = fs::path(path) / kSingleName;
    const fs::path index = fs::path(path) / kIndexName;
    // Like Hugging Face, a single model.safetensors wins over an index beside it.
    if (fs::exists(single, ec)) {
      ck.add_file(SafetensorsFile::open(single.string()), nullptr);
    } else if (fs::exists(index, ec)) {
      open_index(index);
    } else {
      throw Error("checkpoint directory " + path + " has neither " + kSingleName + " nor " +
                  kIndexName + " (sharded checkpoints need their index file)");
    }
  } else if (fs::exists(path, ec)) {
    if (ends_with(path, ".json"))
      open_index(fs::path(path));
    else
      ck.add_file(SafetensorsFile::open(path), nullptr);
  } else {
    throw Error("checkpoint " + path + " does not exist");
  }
  ck.dequantize_fp8();
  return ck;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, view] : index_) out.push_back(name);
  return out;
}

bool Checkpoint::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorView& Checkpoint::at(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("checkpoint " + path_ + " has no tensor '" + name + "'");
  return *it->second;
}

size_t Checkpoint::total_bytes() const {
  size_t total = 0;
  for (const auto& [name, view] : index_) total += view->nbytes;
  return total;
}

}  // namespace dsft::io
