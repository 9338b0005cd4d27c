// GGUF v3 (llama.cpp's model file): typed key/value metadata, tensor infos and aligned tensor data.
// A writer (atomic, mode 0600, tensor data produced lazily so a model is never held twice) and a
// reader that maps the file and validates every count, length and offset before anything is used.
// Also the Q8_0 block quantisation exactly as ggml's quantize_row_q8_0_ref computes it.
// Torch-free: the export module prepares the tensors, this code only lays out bytes.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dsft::io {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType type);

// Tensor element types, numbered as ggml numbers them. The writer produces F32, F16, BF16 and
// Q8_0; the reader knows the block layout of every ggml type so that it can validate any file.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18,
  IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26,
  I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};
// False for numbers ggml does not define (or that were retired).
bool ggml_type_known(uint32_t type);
const char* ggml_type_name(GgmlType type);  // "F32", "Q8_0", ...
int64_t ggml_block_size(GgmlType type);     // elements per block (1 for plain types)
size_t ggml_type_size(GgmlType type);       // bytes per block
// Bytes of a tensor of `ne` (innermost first); throws dsft::Error when ne[0] is not a multiple
// of the block size or the size overflows.
size_t ggml_nbytes(GgmlType type, const std::vector<int64_t>& ne);

// One metadata value: a scalar, a string, or an array of one element type.
class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue u8(uint8_t v);
  static GgufValue i8(int8_t v);
  static GgufValue u16(uint16_t v);
  static GgufValue i16(int16_t v);
  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue i64(int64_t v);
  static GgufValue f32(float v);
  static GgufValue f64(double v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  // Every element must have type `elem` (arrays of arrays are not written: llama.cpp rejects them).
  static GgufValue array(GgufType elem, std::vector<GgufValue> items);
  static GgufValue strings(const std::vector<std::string>& items);
  static GgufValue i32s(const std::vector<int32_t>& items);
  static GgufValue f32s(const std::vector<float>& items);

  GgufType type() const { return type_; }
  GgufType elem_type() const { return elem_; }  // arrays only
  bool is_array() const { return type_ == GgufType::ARRAY; }
  bool is_integer() const;
  bool is_float() const { return type_ == GgufType::FLOAT32 || type_ == GgufType::FLOAT64; }

  // Checked reads: throw dsft::Error when the value has another kind or does not fit.
  uint64_t as_u64() const;
  int64_t as_i64() const;
  double as_f64() const;  // also integers
  bool as_bool() const;
  const std::string& as_string() const;
  const std::vector<GgufValue>& items() const;  // arrays only
  std::vector<std::string> as_strings() const;
  std::vector<int64_t> as_i64s() const;
  std::vector<double> as_f64s() const;

  bool operator==(const GgufValue& other) const;
  bool operator!=(const GgufValue& other) const { return !(*this == other); }
  std::string to_string(size_t max_items = 8) const;  // for inspection output

 private:
  GgufType type_ = GgufType::UINT8;
  GgufType elem_ = GgufType::UINT8;
  uint64_t bits_ = 0;  // integers (two's complement), floats (their IEEE bits), bool
  std::string str_;
  std::vector<GgufValue> items_;
};

// Quantises `n` floats (a multiple of 32) to Q8_0 blocks: per block of 32, d = absmax / 127 stored
// as fp16, q = roundf(x / d) as int8 (ggml's quantize_row_q8_0_ref). `out` gets n / 32 * 34 bytes.
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out);
// Round to nearest even, with overflow to infinity and subnormals, as ggml's GGML_FP32_TO_FP16.
uint16_t float_to_fp16(float x);

// A tensor to write. `ne` is innermost first (an HF [out, in] matrix has ne = {in, out}).
// `produce` is called once, while the file is written, and must return exactly
// ggml_nbytes(type, ne) bytes.
struct GgufTensorToWrite {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;
  std::function<std::vector<uint8_t>()> produce;
};

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32);
  // Sets a key (replacing an earlier value, keeping its position). general.alignment is written
  // first, from the constructor's alignment.
  void set(const std::string& key, GgufValue value);
  bool has(const std::string& key) const;
  const GgufValue* find(const std::string& key) const;
  // Throws dsft::Error on a duplicate name, more than 4 dimensions, a negative dimension or a row
  // length that is not a multiple of the type's block size.
  void add_tensor(GgufTensorToWrite tensor);
  const std::vector<GgufTensorToWrite>& tensors() const { return tensors_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  // Total file size the writer will produce.
  size_t file_size() const;
  // Writes the file atomically (temp file + fsync + rename, mode 0600).
  void write(const std::string& path) const;

 private:
  uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorToWrite> tensors_;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // innermost first
  uint64_t offset = 0;      // relative to the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;
};

// A GGUF file mapped read-only. open() validates: magic, version (2 or 3), counts against the
// file size, every string and array length, value types, nesting, key and tensor-name
// uniqueness, general.alignment (a power of two), dimensions (1..4, non-negative, no overflow),
// tensor types, block divisibility, and each tensor's data lying aligned inside the file without
// overlapping another. Violations throw dsft::Error naming the file and the item.
class GgufFile {
 public:
  static std::shared_ptr<GgufFile> open(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section in the file
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  const GgufValue& at(const std::string& key) const;  // throws dsft::Error naming the key
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // throws naming the tensor
  // The tensor's values as float32 (F32, F16, BF16, Q8_0; other types throw).
  std::vector<float> to_float(const GgufTensorInfo& tensor) const;

 private:
  GgufFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace dsft::io
