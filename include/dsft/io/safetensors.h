// safetensors: read by mmap (zero-copy views), single files and sharded checkpoints
// (model.safetensors.index.json), FP8 e4m3 block-scaled weights dequantised at load; atomic writes.
// Torch-free on purpose: the model module wraps views into tensors, and this code can be built
// and fuzzed under ASan/UBSan without libtorch.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dsft::io {

enum class DType { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };

size_t dtype_size(DType dtype);             // bytes per element
const char* dtype_name(DType dtype);        // "BF16", ...
DType parse_dtype(const std::string& name); // throws dsft::Error on an unknown name

// Scalar conversions for the narrow float formats (bit-exact, no libtorch).
float fp8_e4m3_to_float(uint8_t code);   // e4m3fn: bias 7, no infinities, 0x7F/0xFF are NaN
uint8_t float_to_fp8_e4m3(float x);      // round to nearest even, saturating to +-448; NaN -> 0x7F
float fp8_e5m2_to_float(uint8_t code);   // IEEE-like: bias 15, with infinities
float bf16_to_float(uint16_t bits);
uint16_t float_to_bf16(float x);         // round to nearest even; NaN stays a (quiet) NaN
float fp16_to_float(uint16_t bits);

// Block size of DeepSeek-V3's FP8 weight scales: one scale per 128 x 128 block of a matrix.
constexpr int64_t kFp8BlockSize = 128;

// Quantises a row-major [rows, cols] matrix to e4m3fn with one scale per 128 x 128 block, the
// layout DeepSeek-V3 publishes: w ~= fp8_e4m3_to_float(q[i][j]) * scale_inv[i/128][j/128].
// `q` gets rows*cols bytes; `scale_inv` gets ceil(rows/128) * ceil(cols/128) floats.
void quantize_fp8_e4m3_blockwise(const float* w, int64_t rows, int64_t cols,
                                 std::vector<uint8_t>& q, std::vector<float>& scale_inv);

// The inverse, into BF16 bits (what Checkpoint exposes): bf16(fp8(q) * scale_inv[block]).
// `scale_inv` holds ceil(rows/128) * ceil(cols/128) floats, row-major.
void dequantize_fp8_e4m3_blockwise(const uint8_t* q, const float* scale_inv, int64_t rows,
                                   int64_t cols, uint16_t* out_bf16);

// A tensor inside a mapped file (or, for dequantised FP8 weights, inside an owned buffer).
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // valid while the owning SafetensorsFile / Checkpoint lives
  size_t nbytes = 0;
  int64_t numel() const;
};

// One .safetensors file, mapped read-only. The header is validated completely at open():
// header length within the file and <= 100 MB, JSON well-formed, every dtype known, offsets in
// range, non-overlapping and without holes, shape x dtype == byte length. Any violation throws
// dsft::Error naming the file and the tensor.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorView& at(const std::string& name) const;  // throws dsft::Error naming the tensor

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: a directory with model.safetensors or model.safetensors.index.json (whose
// weight_map names the shards: never guessed), or a single .safetensors path.
// FP8 weights (F8_E4M3) that come with a `<name>_scale_inv` tensor (128x128 block scales, as in
// DeepSeek-V3) are dequantised at load into owned BF16 buffers, and the scale tensors are hidden.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path);
  Checkpoint() = default;
  Checkpoint(const Checkpoint& other);  // shares the maps and buffers; re-points owned views
  Checkpoint& operator=(const Checkpoint& other);
  Checkpoint(Checkpoint&&) = default;
  Checkpoint& operator=(Checkpoint&&) = default;

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorView& at(const std::string& name) const;  // throws dsft::Error naming the tensor
  const std::string& path() const { return path_; }
  size_t total_bytes() const;

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
  std::map<std::string, TensorView> owned_views_;                 // dequantised FP8
  std::vector<std::shared_ptr<std::vector<uint8_t>>> owned_data_;

  void add_file(std::shared_ptr<SafetensorsFile> file, const std::vector<std::string>* names);
  void dequantize_fp8();
  void reindex_owned();
};

// A tensor to write; data must hold exactly numel * dtype_size bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes one safetensors file atomically (temp + fsync + rename), mode 0600. Tensors are laid
// out as the reference writer lays them out (widest dtype first, then name order), so each is
// aligned to its element size. Throws dsft::Error on inconsistent sizes or duplicate names.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes a sharded checkpoint into `dir`: model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json, each shard at most `max_shard_bytes` (one tensor never splits).
void write_sharded_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                               size_t max_shard_bytes,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace dsft::io
