// One .safetensors file: mapped read-only and validated completely at open (no read ever leaves
// the map, whatever the bytes say), and written atomically (single file or sharded + index).
#include "dsft/io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <limits>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "io/json_strict.h"

namespace dsft::io {

namespace {

using nlohmann::json;

// The reference implementation (huggingface/safetensors) refuses headers over 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Small files are read ahead whole; big shards are streamed (read ahead, dropped behind).
constexpr size_t kWillNeedLimit = size_t{1} << 30;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char* json_type(const json& j) { return j.type_name(); }

// Reads a JSON integer that must be >= 0 and fit `max`; returns false when it is not one.
bool get_nonnegative(const json& j, uint64_t max, uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<uint64_t>();
    return out <= max;
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    out = static_cast<uint64_t>(v);
    return out <= max;
  }
  return false;
}

// numel * elem_size with overflow detection; false on overflow.
bool checked_bytes(const std::vector<int64_t>& shape, size_t elem_size, size_t& out) {
  size_t n = elem_size;
  for (int64_t d : shape) {
    const auto ud = static_cast<size_t>(d);
    if (ud != 0 && n > std::numeric_limits<size_t>::max() / ud) return false;
    n *= ud;
  }
  out = n;
  return true;
}

struct Entry {
  std::string name;
  uint64_t begin = 0, end = 0;
};

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorView& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw Error("safetensors file " + path_ + " has no tensor '" + name + "'");
  return it->second;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const std::string where = "safetensors file " + path;
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + where + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error("cannot stat " + where + ": " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(where + " is not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(where + " is " + std::to_string(size) +
                " bytes, too short to hold the 8-byte header length: not a safetensors file");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) throw Error("cannot map " + where + ": " + std::strerror(map_errno));
  file->map_ = map;
  file->map_size_ = size;
  ::madvise(map, size, size <= kWillNeedLimit ? MADV_WILLNEED : MADV_SEQUENTIAL);

  const auto* base = static_cast<const uint8_t*>(map);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];  // little-endian
  if (header_len > kMaxHeaderBytes)
    throw Error(where + ": header length " + std::to_string(header_len) +
                " is over the 100 MB limit (corrupt file or not safetensors)");
  if (header_len > size - 8)
    throw Error(where + ": header length " + std::to_string(header_len) +
                " runs past the end of the file (" + std::to_string(size) +
                " bytes); the file is truncated or not safetensors");

  const char* hdr = reinterpret_cast<const char*>(base + 8);
  const json header = detail::parse_json_strict(hdr, hdr + header_len, where + ": header");
  if (!header.is_object())
    throw Error(where + ": header is a JSON " + json_type(header) + ", expected an object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  std::vector<Entry> entries;
  entries.reserve(header.size());

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        throw Error(where + ": __metadata__ is a JSON " + json_type(entry) +
                    ", expected an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          throw Error(where + ": __metadata__ key '" + key + "' is a JSON " + json_type(value) +
                      ", expected a string");
        file->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string tw = where + ": tensor '" + name + "'";
    if (!entry.is_object())
      throw Error(tw + " is a JSON " + json_type(entry) + ", expected an object");

    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string())
      throw Error(tw + " has no \"dtype\" string");
    DType dtype;
    try {
      dtype = parse_dtype(dt->get<std::string>());
    } catch (const Error& e) {
      throw Error(tw + ": " + e.what());
    }

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) throw Error(tw + " has no \"shape\" array");
    std::vector<int64_t> shape;
    shape.reserve(sh->size());
    for (const auto& d : *sh) {
      uint64_t v = 0;
      if (!get_nonnegative(d, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), v))
        throw Error(tw + " has shape dimension " + d.dump() +
                    ", expected a non-negative integer");
      shape.push_back(static_cast<int64_t>(v));
    }
    size_t expected_bytes = 0;
    if (!checked_bytes(shape, dtype_size(dtype), expected_bytes))
      throw Error(tw + " shape " + shape_str(shape) + " x " + dtype_name(dtype) +
                  " overflows the address space");

    auto off = entry.find("data_offsets");
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      throw Error(tw + " has no \"data_offsets\" [begin, end] pair");
    uint64_t begin = 0, end = 0;
    if (!get_nonnegative((*off)[0], std::numeric_limits<uint64_t>::max(), begin) ||
        !get_nonnegative((*off)[1], std::numeric_limits<uint64_t>::max(), end))
      throw Error(tw + " has data_offsets " + off->dump() + ", expected two non-negative integers");
    if (begin > end)
      throw Error(tw + " has data_offsets [" + std::to_string(begin) + ", " +
                  std::to_string(end) + "] with begin after end");
    if (end > data_size)
      throw Error(tw + " has data_offsets end " + std::to_string(end) +
                  " past the data section (" + std::to_string(data_size) +
                  " bytes); the file is truncated or corrupt");
    if (end - begin != expected_bytes)
      throw Error(tw + " holds " + std::to_string(end - begin) + " bytes but shape " +
                  shape_str(shape) + " x " + dtype_name(dtype) + " needs " +
                  std::to_string(expected_bytes));

    TensorView view;
    view.name = name;
    view.dtype = dtype;
    view.shape = std::move(shape);
    view.data = base + data_start + begin;
    view.nbytes = static_cast<size_t>(end - begin);
    file->tensors_.emplace(name, std::move(view));
    entries.push_back({name, begin, end});
  }

  // The data section must be tiled exactly: in offset order, each tensor starts where the
  // previous one ended, and the last one ends at the end of the file (as the reference checks).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const Entry* prev = nullptr;
  for (const auto& e : entries) {
    if (e.begin < cursor)
      throw Error(where + ": tensors '" + prev->name + "' and '" + e.name +
                  "' overlap (one ends at byte " + std::to_string(cursor) +
                  " of the data section, the other begins at " + std::to_string(e.begin) + ")");
    if (e.begin > cursor)
      throw Error(where + ": " + std::to_string(e.begin - cursor) +
                  " unused bytes lie before tensor '" + e.name + "' (it begins at byte " +
                  std::to_string(e.begin) + " of the data section, the previous tensor ends at " +
                  std::to_string(cursor) + ")");
    cursor = e.end;
    prev = &e;
  }
  if (cursor != data_size)
    throw Error(where + ": the data section has " + std::to_string(data_size - cursor) +
                " bytes after the last tensor" + (prev ? " '" + prev->name + "'" : std::string()) +
                " that no tensor covers; the file is corrupt");
  return file;
}

namespace {

// Validates tensors for writing and returns them in name order.
std::vector<const TensorToWrite*> sorted_for_write(const std::string& path,
                                                   const std::vector<TensorToWrite>& tensors) {
  std::vector<const TensorToWrite*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorToWrite& t = *order[i];
    const std::string tw = "cannot write " + path + ": tensor '" + t.name + "'";
    if (t.name == "__metadata__") throw Error(tw + " uses the reserved name __metadata__");
    if (i > 0 && order[i - 1]->name == t.name) throw Error(tw + " appears twice");
    for (int64_t d : t.shape)
      if (d < 0) throw Error(tw + " has a negative dimension in shape " + shape_str(t.shape));
    size_t need = 0;
    if (!checked_bytes(t.shape, dtype_size(t.dtype), need))
      throw Error(tw + " shape " + shape_str(t.shape) + " overflows the address space");
    if (need != t.nbytes)
      throw Error(tw + " has " + std::to_string(t.nbytes) + " bytes but shape " +
                  shape_str(t.shape) + " x " + dtype_name(t.dtype) + " needs " +
                  std::to_string(need));
    if (t.nbytes > 0 && t.data == nullptr) throw Error(tw + " has no data");
  }
  // The reference writer's layout: widest dtype first, then by name. With the 8-byte aligned
  // data section this keeps every tensor aligned to its element size inside the mapped file.
  std::stable_sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    return dtype_size(a->dtype) > dtype_size(b->dtype);
  });
  return order;
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto order = sorted_for_write(path, tensors);
  // Keys in data order, fields and __metadata__ placed as the reference writer places them, so
  // that rewriting a published file reproduces it byte for byte.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype_name(t->dtype);
    entry["shape"] = t->shape;
    entry["data_offsets"] = {offset, offset + t->nbytes};
    header[t->name] = std::move(entry);
    offset += t->nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));

  util::write_file_atomic(path, [&](std::FILE* f) {
    auto put = [&](const void* p, size_t n) {
      if (n > 0 && std::fwrite(p, 1, n, f) != n)
        throw Error("cannot write " + path + ": " + std::strerror(errno));
    };
    put(len_bytes, 8);
    put(text.data(), text.size());
    for (const TensorToWrite* t : order) put(t->data, t->nbytes);
  });
}

void write_sharded_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                               size_t max_shard_bytes,
                               const std::map<std::string, std::string>& metadata) {
  namespace fs = std::filesystem;
  if (max_shard_bytes == 0)
    throw Error("cannot write a sharded checkpoint into " + dir + ": max_shard_bytes is 0");
  const auto order = sorted_for_write(dir, tensors);
  util::make_private_dir(dir);
  // A single-file checkpoint beside the shards would be loaded instead of them (readers prefer
  // model.safetensors, as Hugging Face does), so refuse rather than write a shadowed checkpoint.
  if (util::path_exists((fs::path(dir) / "model.safetensors").string()))
    throw Error("cannot write a sharded checkpoint into " + dir +
                ": it already holds model.safetensors, which readers would load instead; "
                "remove it or choose another directory");

  // Greedy packing in name order; one tensor never splits, so a shard may exceed the limit
  // when a single tensor does.
  std::vector<std::vector<TensorToWrite>> shards;
  size_t shard_bytes = 0;
  uint64_t total = 0;
  for (const TensorToWrite* t : order) {
    if (shards.empty() || (shard_bytes > 0 && shard_bytes + t->nbytes > max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(*t);
    shard_bytes += t->nbytes;
    total += t->nbytes;
  }
  if (shards.empty()) shards.emplace_back();

  json weight_map = json::object();
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    write_safetensors((fs::path(dir) / name).string(), shards[i], metadata);
    for (const auto& t : shards[i]) weight_map[t.name] = name;
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  util::write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(),
                          index.dump(2) + "\n");
}

}  // namespace dsft::io
