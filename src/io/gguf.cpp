// GGUF v3: metadata values, the atomic writer, the validating mapped reader, Q8_0 blocks.
// Layout: "GGUF", u32 version, u64 tensor count, u64 KV count, KVs (u64-length strings, u32 type,
// value), tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset), zero padding to
// the alignment, then the data section (each tensor at an aligned offset). All little-endian.
#include "dsft/io/gguf.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <map>
#include <set>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace dsft::io {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr int64_t kQk8 = 32;

struct TypeTraits {
  const char* name;
  int64_t block;
  size_t size;
};

// ggml's type_traits: elements per block and bytes per block.
const std::map<uint32_t, TypeTraits>& type_table() {
  static const std::map<uint32_t, TypeTraits> table = {
      {0, {"F32", 1, 4}},          {1, {"F16", 1, 2}},          {2, {"Q4_0", 32, 18}},
      {3, {"Q4_1", 32, 20}},       {6, {"Q5_0", 32, 22}},       {7, {"Q5_1", 32, 24}},
      {8, {"Q8_0", 32, 34}},       {9, {"Q8_1", 32, 36}},       {10, {"Q2_K", 256, 84}},
      {11, {"Q3_K", 256, 110}},    {12, {"Q4_K", 256, 144}},    {13, {"Q5_K", 256, 176}},
      {14, {"Q6_K", 256, 210}},    {15, {"Q8_K", 256, 292}},    {16, {"IQ2_XXS", 256, 66}},
      {17, {"IQ2_XS", 256, 74}},   {18, {"IQ3_XXS", 256, 98}},  {19, {"IQ1_S", 256, 50}},
      {20, {"IQ4_NL", 32, 18}},    {21, {"IQ3_S", 256, 110}},   {22, {"IQ2_S", 256, 82}},
      {23, {"IQ4_XS", 256, 136}},  {24, {"I8", 1, 1}},          {25, {"I16", 1, 2}},
      {26, {"I32", 1, 4}},         {27, {"I64", 1, 8}},         {28, {"F64", 1, 8}},
      {29, {"IQ1_M", 256, 56}},    {30, {"BF16", 1, 2}},        {34, {"TQ1_0", 256, 54}},
      {35, {"TQ2_0", 256, 66}},    {39, {"MXFP4", 32, 17}},
  };
  return table;
}

const TypeTraits& traits(GgmlType type) {
  auto it = type_table().find(static_cast<uint32_t>(type));
  if (it == type_table().end())
    throw Error("unknown ggml tensor type " + std::to_string(static_cast<uint32_t>(type)));
  return it->second;
}

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

bool type_valid(uint32_t t) { return t <= 12; }

uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::string ne_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// ---- writing ----

class Out {
 public:
  explicit Out(std::FILE* f, const std::string& path) : f_(f), path_(path) {}
  void bytes(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) throw Error("cannot write " + path_ + ": " + std::strerror(errno));
    pos_ += n;
  }
  template <class T>
  void pod(T v) { bytes(&v, sizeof v); }  // x86-64/aarch64: little-endian already
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[256] = {};
    uint64_t n = align_up(pos_, alignment) - pos_;
    while (n) {
      const size_t k = std::min<uint64_t>(n, sizeof zeros);
      bytes(zeros, k);
      n -= k;
    }
  }
  uint64_t pos() const { return pos_; }

 private:
  std::FILE* f_;
  const std::string& path_;
  uint64_t pos_ = 0;
};

void write_scalar(Out& out, const GgufValue& v) {
  switch (v.type()) {
    case GgufType::UINT8: out.pod<uint8_t>(static_cast<uint8_t>(v.as_u64())); break;
    case GgufType::INT8: out.pod<int8_t>(static_cast<int8_t>(v.as_i64())); break;
    case GgufType::UINT16: out.pod<uint16_t>(static_cast<uint16_t>(v.as_u64())); break;
    case GgufType::INT16: out.pod<int16_t>(static_cast<int16_t>(v.as_i64())); break;
    case GgufType::UINT32: out.pod<uint32_t>(static_cast<uint32_t>(v.as_u64())); break;
    case GgufType::INT32: out.pod<int32_t>(static_cast<int32_t>(v.as_i64())); break;
    case GgufType::UINT64: out.pod<uint64_t>(v.as_u64()); break;
    case GgufType::INT64: out.pod<int64_t>(v.as_i64()); break;
    case GgufType::FLOAT32: out.pod<float>(static_cast<float>(v.as_f64())); break;
    case GgufType::FLOAT64: out.pod<double>(v.as_f64()); break;
    case GgufType::BOOL: out.pod<uint8_t>(v.as_bool() ? 1 : 0); break;
    case GgufType::STRING: out.str(v.as_string()); break;
    case GgufType::ARRAY: throw Error("GGUF arrays of arrays are not supported");
  }
}

void write_value(Out& out, const GgufValue& v) {
  out.pod<uint32_t>(static_cast<uint32_t>(v.type()));
  if (!v.is_array()) return write_scalar(out, v);
  out.pod<uint32_t>(static_cast<uint32_t>(v.elem_type()));
  out.pod<uint64_t>(v.items().size());
  for (const auto& item : v.items()) write_scalar(out, item);
}

size_t scalar_bytes(const GgufValue& v) {
  return v.type() == GgufType::STRING ? 8 + v.as_string().size() : scalar_size(v.type());
}

size_t value_bytes(const GgufValue& v) {
  if (!v.is_array()) return 4 + scalar_bytes(v);
  size_t n = 4 + 4 + 8;
  for (const auto& item : v.items()) n += scalar_bytes(item);
  return n;
}

// ---- reading ----

// A bounds-checked cursor over the mapped header.
class Cursor {
 public:
  Cursor(const uint8_t* base, size_t size, const std::string& where)
      : base_(base), size_(size), where_(where) {}
  void need(uint64_t n, const std::string& what) const {
    if (n > size_ - pos_)
      throw Error(where_ + ": " + what + " (" + std::to_string(n) + " bytes at offset " +
                  std::to_string(pos_) + ") runs past the end of the file (" +
                  std::to_string(size_) + " bytes); the file is truncated or corrupt");
  }
  template <class T>
  T pod(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  std::string str(const std::string& what) {
    const uint64_t n = pod<uint64_t>(what + " length");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), n);
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* base_;
  size_t size_;
  const std::string& where_;
  size_t pos_ = 0;
};

GgufValue read_scalar(Cursor& c, GgufType t, const std::string& what) {
  switch (t) {
    case GgufType::UINT8: return GgufValue::u8(c.pod<uint8_t>(what));
    case GgufType::INT8: return GgufValue::i8(c.pod<int8_t>(what));
    case GgufType::UINT16: return GgufValue::u16(c.pod<uint16_t>(what));
    case GgufType::INT16: return GgufValue::i16(c.pod<int16_t>(what));
    case GgufType::UINT32: return GgufValue::u32(c.pod<uint32_t>(what));
    case GgufType::INT32: return GgufValue::i32(c.pod<int32_t>(what));
    case GgufType::UINT64: return GgufValue::u64(c.pod<uint64_t>(what));
    case GgufType::INT64: return GgufValue::i64(c.pod<int64_t>(what));
    case GgufType::FLOAT32: return GgufValue::f32(c.pod<float>(what));
    case GgufType::FLOAT64: return GgufValue::f64(c.pod<double>(what));
    case GgufType::BOOL: {
      const uint8_t b = c.pod<uint8_t>(what);
      if (b > 1) throw Error(what + " is a bool stored as " + std::to_string(b) + ", expected 0 or 1");
      return GgufValue::boolean(b != 0);
    }
    case GgufType::STRING: return GgufValue::string(c.str(what));
    case GgufType::ARRAY: break;
  }
  throw Error(what + ": arrays of arrays are not supported");
}

}  // namespace

// ---- types ----

const char* gguf_type_name(GgufType type) {
  static const char* names[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array", "uint64", "int64",  "float64"};
  const auto i = static_cast<uint32_t>(type);
  return i <= 12 ? names[i] : "unknown";
}

bool ggml_type_known(uint32_t type) { return type_table().count(type) != 0; }
const char* ggml_type_name(GgmlType type) { return traits(type).name; }
int64_t ggml_block_size(GgmlType type) { return traits(type).block; }
size_t ggml_type_size(GgmlType type) { return traits(type).size; }

size_t ggml_nbytes(GgmlType type, const std::vector<int64_t>& ne) {
  const TypeTraits& t = traits(type);
  if (ne.empty()) throw Error("a GGUF tensor needs at least one dimension");
  for (int64_t d : ne)
    if (d < 0) throw Error("GGUF tensor dimensions must be non-negative (got " + ne_str(ne) + ")");
  if (ne[0] % t.block != 0)
    throw Error(std::string("a ") + t.name + " tensor needs a row length that is a multiple of " +
                std::to_string(t.block) + " (got ne " + ne_str(ne) + ")");
  const size_t max = std::numeric_limits<size_t>::max() / 2;
  const auto blocks = static_cast<size_t>(ne[0] / t.block);
  if (blocks > max / t.size) throw Error("GGUF tensor of ne " + ne_str(ne) + " overflows the address space");
  size_t n = blocks * t.size;
  for (size_t i = 1; i < ne.size(); ++i) {
    const auto d = static_cast<size_t>(ne[i]);
    if (d != 0 && n > max / d) throw Error("GGUF tensor of ne " + ne_str(ne) + " overflows the address space");
    n *= d;
  }
  return n;
}

// ---- GgufValue ----

#define DSFT_GGUF_SCALAR(fn, T, tag, expr)  \
  GgufValue GgufValue::fn(T x) {            \
    GgufValue v;                            \
    v.type_ = GgufType::tag;                \
    v.bits_ = (expr);                       \
    return v;                               \
  }
DSFT_GGUF_SCALAR(u8, uint8_t, UINT8, x)
DSFT_GGUF_SCALAR(u16, uint16_t, UINT16, x)
DSFT_GGUF_SCALAR(u32, uint32_t, UINT32, x)
DSFT_GGUF_SCALAR(u64, uint64_t, UINT64, x)
DSFT_GGUF_SCALAR(i8, int8_t, INT8, static_cast<uint64_t>(static_cast<int64_t>(x)))
DSFT_GGUF_SCALAR(i16, int16_t, INT16, static_cast<uint64_t>(static_cast<int64_t>(x)))
DSFT_GGUF_SCALAR(i32, int32_t, INT32, static_cast<uint64_t>(static_cast<int64_t>(x)))
DSFT_GGUF_SCALAR(i64, int64_t, INT64, static_cast<uint64_t>(x))
DSFT_GGUF_SCALAR(f32, float, FLOAT32, f32_bits(x))
DSFT_GGUF_SCALAR(boolean, bool, BOOL, x ? 1u : 0u)
#undef DSFT_GGUF_SCALAR

GgufValue GgufValue::f64(double x) {
  GgufValue v;
  v.type_ = GgufType::FLOAT64;
  std::memcpy(&v.bits_, &x, 8);
  return v;
}

GgufValue GgufValue::string(std::string s) {
  GgufValue v;
  v.type_ = GgufType::STRING;
  v.str_ = std::move(s);
  return v;
}

GgufValue GgufValue::array(GgufType elem, std::vector<GgufValue> items) {
  if (elem == GgufType::ARRAY) throw Error("GGUF arrays of arrays are not supported");
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].type_ != elem)
      throw Error(std::string("GGUF array of ") + gguf_type_name(elem) + " has a " +
                  gguf_type_name(items[i].type_) + " at index " + std::to_string(i));
  GgufValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = elem;
  v.items_ = std::move(items);
  return v;
}

GgufValue GgufValue::strings(const std::vector<std::string>& items) {
  std::vector<GgufValue> v;
  v.reserve(items.size());
  for (const auto& s : items) v.push_back(string(s));
  return array(GgufType::STRING, std::move(v));
}

GgufValue GgufValue::i32s(const std::vector<int32_t>& items) {
  std::vector<GgufValue> v;
  v.reserve(items.size());
  for (int32_t x : items) v.push_back(i32(x));
  return array(GgufType::INT32, std::move(v));
}

GgufValue GgufValue::f32s(const std::vector<float>& items) {
  std::vector<GgufValue> v;
  v.reserve(items.size());
  for (float x : items) v.push_back(f32(x));
  return array(GgufType::FLOAT32, std::move(v));
}

bool GgufValue::is_integer() const {
  switch (type_) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16:
    case GgufType::UINT32: case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64:
      return true;
    default:
      return false;
  }
}

namespace {
bool is_signed(GgufType t) {
  return t == GgufType::INT8 || t == GgufType::INT16 || t == GgufType::INT32 || t == GgufType::INT64;
}
}  // namespace

uint64_t GgufValue::as_u64() const {
  if (!is_integer()) throw Error(std::string("GGUF value is a ") + gguf_type_name(type_) + ", expected an integer");
  if (is_signed(type_) && static_cast<int64_t>(bits_) < 0)
    throw Error("GGUF value " + std::to_string(static_cast<int64_t>(bits_)) + " is negative, expected an unsigned integer");
  return bits_;
}

int64_t GgufValue::as_i64() const {
  if (!is_integer()) throw Error(std::string("GGUF value is a ") + gguf_type_name(type_) + ", expected an integer");
  if (!is_signed(type_) && bits_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw Error("GGUF value " + std::to_string(bits_) + " does not fit a signed 64-bit integer");
  return static_cast<int64_t>(bits_);
}

double GgufValue::as_f64() const {
  if (type_ == GgufType::FLOAT32) return bits_f32(static_cast<uint32_t>(bits_));
  if (type_ == GgufType::FLOAT64) {
    double d;
    std::memcpy(&d, &bits_, 8);
    return d;
  }
  if (is_integer()) return is_signed(type_) ? static_cast<double>(static_cast<int64_t>(bits_)) : static_cast<double>(bits_);
  throw Error(std::string("GGUF value is a ") + gguf_type_name(type_) + ", expected a number");
}

bool GgufValue::as_bool() const {
  if (type_ != GgufType::BOOL) throw Error(std::string("GGUF value is a ") + gguf_type_name(type_) + ", expected a bool");
  return bits_ != 0;
}

const std::string& GgufValue::as_string() const {
  if (type_ != GgufType::STRING) throw Error(std::string("GGUF value is a ") + gguf_type_name(type_) + ", expected a string");
  return str_;
}

const std::vector<GgufValue>& GgufValue::items() const {
  if (type_ != GgufType::ARRAY) throw Error(std::string("GGUF value is a ") + gguf_type_name(type_) + ", expected an array");
  return items_;
}

std::vector<std::string> GgufValue::as_strings() const {
  std::vector<std::string> out;
  for (const auto& v : items()) out.push_back(v.as_string());
  return out;
}

std::vector<int64_t> GgufValue::as_i64s() const {
  std::vector<int64_t> out;
  for (const auto& v : items()) out.push_back(v.as_i64());
  return out;
}

std::vector<double> GgufValue::as_f64s() const {
  std::vector<double> out;
  for (const auto& v : items()) out.push_back(v.as_f64());
  return out;
}

bool GgufValue::operator==(const GgufValue& o) const {
  if (type_ != o.type_) return false;
  if (type_ == GgufType::STRING) return str_ == o.str_;
  if (type_ == GgufType::ARRAY) return elem_ == o.elem_ && items_ == o.items_;
  return bits_ == o.bits_;
}

std::string GgufValue::to_string(size_t max_items) const {
  switch (type_) {
    case GgufType::STRING: {
      std::string s = str_.size() > 120 ? str_.substr(0, 117) + "..." : str_;
      std::string q = "\"";
      for (char ch : s) q += ch == '\n' ? std::string("\\n") : std::string(1, ch);
      return q + "\"";
    }
    case GgufType::BOOL: return bits_ ? "true" : "false";
    case GgufType::FLOAT32: case GgufType::FLOAT64: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.9g", as_f64());
      return buf;
    }
    case GgufType::ARRAY: {
      std::string s = std::string("[") + gguf_type_name(elem_) + " x " + std::to_string(items_.size()) + ": ";
      for (size_t i = 0; i < items_.size() && i < max_items; ++i) s += (i ? ", " : "") + items_[i].to_string(0);
      if (items_.size() > max_items) s += ", ...";
      return s + "]";
    }
    default:
      return is_signed(type_) ? std::to_string(static_cast<int64_t>(bits_)) : std::to_string(bits_);
  }
}

// ---- Q8_0 ----

uint16_t float_to_fp16(float f) {
  // ggml's portable GGML_FP32_TO_FP16 (identical to the F16C instruction's round-to-nearest-even).
  const float scale_to_inf = 0x1.0p+112f;
  const float scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_f32((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  if (n % kQk8 != 0) throw Error("Q8_0 needs a multiple of 32 values (got " + std::to_string(n) + ")");
  for (int64_t b = 0; b < n / kQk8; ++b) {
    const float* xb = x + b * kQk8;
    uint8_t* ob = out + b * 34;
    float amax = 0.0f;
    for (int j = 0; j < kQk8; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = float_to_fp16(d);
    std::memcpy(ob, &dh, 2);
    for (int j = 0; j < kQk8; ++j) {
      const float v = xb[j] * id;
      ob[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(v)));
    }
  }
}

void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out) {
  if (n % kQk8 != 0) throw Error("Q8_0 needs a multiple of 32 values (got " + std::to_string(n) + ")");
  for (int64_t b = 0; b < n / kQk8; ++b) {
    const uint8_t* ib = blocks + b * 34;
    uint16_t dh;
    std::memcpy(&dh, ib, 2);
    const float d = fp16_to_float(dh);
    for (int j = 0; j < kQk8; ++j) out[b * kQk8 + j] = d * static_cast<float>(static_cast<int8_t>(ib[2 + j]));
  }
}

// ---- writer ----

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw Error("GGUF alignment must be a power of two (got " + std::to_string(alignment) + ")");
  kv_.emplace_back("general.alignment", GgufValue::u32(alignment));
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  if (key == "general.alignment") {
    if (value.type() != GgufType::UINT32 || value.as_u64() != alignment_)
      throw Error("general.alignment is fixed by the writer (" + std::to_string(alignment_) + ")");
    return;
  }
  if (value.is_array() && value.elem_type() == GgufType::ARRAY)
    throw Error("GGUF key " + key + ": arrays of arrays are not supported");
  for (auto& [k, v] : kv_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

bool GgufWriter::has(const std::string& key) const { return find(key) != nullptr; }

const GgufValue* GgufWriter::find(const std::string& key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

void GgufWriter::add_tensor(GgufTensorToWrite tensor) {
  const std::string tw = "GGUF tensor '" + tensor.name + "'";
  if (tensor.name.empty()) throw Error("a GGUF tensor needs a name");
  if (tensor.name.size() >= 64)
    throw Error(tw + " has a name of " + std::to_string(tensor.name.size()) +
                " bytes; llama.cpp allows at most 63");
  for (const auto& t : tensors_)
    if (t.name == tensor.name) throw Error(tw + " is added twice");
  if (tensor.ne.empty() || tensor.ne.size() > static_cast<size_t>(kMaxDims))
    throw Error(tw + " has " + std::to_string(tensor.ne.size()) + " dimensions, expected 1 to 4");
  try {
    (void)ggml_nbytes(tensor.type, tensor.ne);
  } catch (const Error& e) {
    throw Error(tw + ": " + e.what());
  }
  if (!tensor.produce) throw Error(tw + " has no data");
  tensors_.push_back(std::move(tensor));
}

size_t GgufWriter::file_size() const {
  size_t n = 4 + 4 + 8 + 8;
  for (const auto& [k, v] : kv_) n += 8 + k.size() + value_bytes(v);
  for (const auto& t : tensors_) n += 8 + t.name.size() + 4 + 8 * t.ne.size() + 4 + 8;
  n = align_up(n, alignment_);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    n += ggml_nbytes(tensors_[i].type, tensors_[i].ne);
    if (i + 1 < tensors_.size()) n = align_up(n, alignment_);
  }
  return n;
}

void GgufWriter::write(const std::string& path) const {
  // Offsets first: each tensor starts at an aligned offset of the data section.
  std::vector<uint64_t> offsets;
  uint64_t off = 0;
  for (const auto& t : tensors_) {
    off = align_up(off, alignment_);
    offsets.push_back(off);
    off += ggml_nbytes(t.type, t.ne);
  }
  util::write_file_atomic(path, [&](std::FILE* f) {
    Out out(f, path);
    out.pod<uint32_t>(kMagic);
    out.pod<uint32_t>(kVersion);
    out.pod<uint64_t>(tensors_.size());
    out.pod<uint64_t>(kv_.size());
    for (const auto& [k, v] : kv_) {
      out.str(k);
      write_value(out, v);
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      out.str(t.name);
      out.pod<uint32_t>(static_cast<uint32_t>(t.ne.size()));
      for (int64_t d : t.ne) out.pod<uint64_t>(static_cast<uint64_t>(d));
      out.pod<uint32_t>(static_cast<uint32_t>(t.type));
      out.pod<uint64_t>(offsets[i]);
    }
    out.pad_to(alignment_);
    const uint64_t data_start = out.pos();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      const uint64_t at = data_start + offsets[i];
      while (out.pos() < at) out.pod<uint8_t>(0);
      const std::vector<uint8_t> bytes = t.produce();
      const size_t expected = ggml_nbytes(t.type, t.ne);
      if (bytes.size() != expected)
        throw Error("GGUF tensor '" + t.name + "' produced " + std::to_string(bytes.size()) +
                    " bytes, expected " + std::to_string(expected) + " for " + ggml_type_name(t.type) +
                    " " + ne_str(t.ne));
      out.bytes(bytes.data(), bytes.size());
    }
  });
}

// ---- reader ----

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(map_, size_);
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

const GgufValue& GgufFile::at(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error("GGUF file " + path_ + " has no key '" + key + "'");
  return *v;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) throw Error("GGUF file " + path_ + " has no tensor '" + name + "'");
  return *t;
}

std::vector<float> GgufFile::to_float(const GgufTensorInfo& t) const {
  const auto n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  switch (t.type) {
    case GgmlType::F32: std::memcpy(out.data(), t.data, n * 4); break;
    case GgmlType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = fp16_to_float(h);
      }
      break;
    case GgmlType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = bf16_to_float(h);
      }
      break;
    case GgmlType::Q8_0: dequantize_q8_0(t.data, static_cast<int64_t>(n), out.data()); break;
    default:
      throw Error(std::string("GGUF tensor '") + t.name + "' is " + ggml_type_name(t.type) +
                  ": only F32, F16, BF16 and Q8_0 can be read as floats");
  }
  return out;
}

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  const std::string where = "GGUF file " + path;
  std::shared_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + where + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(where + " is not a regular file");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size < 24) {
    ::close(fd);
    throw Error(where + " is " + std::to_string(size) + " bytes, too short for a GGUF header");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) throw Error("cannot map " + where + ": " + std::strerror(map_errno));
  file->map_ = map;
  file->size_ = size;
  const auto* base = static_cast<const uint8_t*>(map);

  Cursor c(base, size, where);
  if (c.pod<uint32_t>("magic") != kMagic) throw Error(where + " does not start with \"GGUF\": not a GGUF file");
  file->version_ = c.pod<uint32_t>("version");
  if (file->version_ != 2 && file->version_ != 3)
    throw Error(where + " has GGUF version " + std::to_string(file->version_) + ", expected 2 or 3");
  const uint64_t n_tensors = c.pod<uint64_t>("tensor count");
  const uint64_t n_kv = c.pod<uint64_t>("key/value count");
  // Each KV needs >= 8 + 4 + 1 bytes and each tensor info >= 8 + 4 + 8 + 4 + 8: a count the file
  // cannot hold is corruption, caught before any allocation sized by it.
  if (n_kv > c.remaining() / 13)
    throw Error(where + " claims " + std::to_string(n_kv) + " keys, more than the file can hold");
  if (n_tensors > c.remaining() / 32)
    throw Error(where + " claims " + std::to_string(n_tensors) + " tensors, more than the file can hold");

  std::set<std::string> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.str("key " + std::to_string(i));
    const std::string kw = where + ": key '" + key + "'";
    if (!keys.insert(key).second) throw Error(kw + " appears twice");
    const uint32_t t = c.pod<uint32_t>(kw + " type");
    if (!type_valid(t)) throw Error(kw + " has unknown value type " + std::to_string(t));
    GgufValue v;
    if (static_cast<GgufType>(t) == GgufType::ARRAY) {
      const uint32_t et = c.pod<uint32_t>(kw + " array type");
      if (!type_valid(et)) throw Error(kw + " is an array of unknown type " + std::to_string(et));
      if (static_cast<GgufType>(et) == GgufType::ARRAY) throw Error(kw + " is an array of arrays (not supported)");
      const uint64_t n = c.pod<uint64_t>(kw + " array length");
      const size_t min_elem = static_cast<GgufType>(et) == GgufType::STRING ? 8 : scalar_size(static_cast<GgufType>(et));
      if (n > c.remaining() / min_elem)
        throw Error(kw + " claims " + std::to_string(n) + " array elements, more than the file holds");
      std::vector<GgufValue> items;
      items.reserve(n);
      for (uint64_t j = 0; j < n; ++j) items.push_back(read_scalar(c, static_cast<GgufType>(et), kw + "[" + std::to_string(j) + "]"));
      v = GgufValue::array(static_cast<GgufType>(et), std::move(items));
    } else {
      v = read_scalar(c, static_cast<GgufType>(t), kw);
    }
    file->kv_.emplace_back(key, std::move(v));
  }
  if (const GgufValue* a = file->find("general.alignment")) {
    if (a->type() != GgufType::UINT32)
      throw Error(where + ": general.alignment is a " + gguf_type_name(a->type()) + ", expected uint32");
    const uint64_t al = a->as_u64();
    if (al == 0 || (al & (al - 1)) != 0)
      throw Error(where + ": general.alignment " + std::to_string(al) + " is not a power of two");
    file->alignment_ = static_cast<uint32_t>(al);
  }

  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.str("tensor " + std::to_string(i) + " name");
    const std::string tw = where + ": tensor '" + t.name + "'";
    if (!names.insert(t.name).second) throw Error(tw + " appears twice");
    const uint32_t n_dims = c.pod<uint32_t>(tw + " dimension count");
    if (n_dims == 0 || n_dims > static_cast<uint32_t>(kMaxDims))
      throw Error(tw + " has " + std::to_string(n_dims) + " dimensions, expected 1 to 4");
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t v = c.pod<uint64_t>(tw + " dimension");
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw Error(tw + " has dimension " + std::to_string(v) + ", too large");
      t.ne.push_back(static_cast<int64_t>(v));
    }
    const uint32_t type = c.pod<uint32_t>(tw + " type");
    if (!ggml_type_known(type)) throw Error(tw + " has unknown ggml type " + std::to_string(type));
    t.type = static_cast<GgmlType>(type);
    t.offset = c.pod<uint64_t>(tw + " offset");
    try {
      t.nbytes = ggml_nbytes(t.type, t.ne);
    } catch (const Error& e) {
      throw Error(tw + ": " + e.what());
    }
    if (t.offset % file->alignment_ != 0)
      throw Error(tw + " has offset " + std::to_string(t.offset) + ", not a multiple of the alignment " +
                  std::to_string(file->alignment_));
    file->tensors_.push_back(std::move(t));
  }

  file->data_offset_ = align_up(c.pos(), file->alignment_);
  if (file->data_offset_ > size && !file->tensors_.empty())
    throw Error(where + ": the data section starts past the end of the file; the file is truncated");
  const uint64_t data_size = size >= file->data_offset_ ? size - file->data_offset_ : 0;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto& t : file->tensors_) {
    const std::string tw = where + ": tensor '" + t.name + "'";
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      throw Error(tw + " (" + std::to_string(t.nbytes) + " bytes at data offset " + std::to_string(t.offset) +
                  ") runs past the end of the file; the file is truncated or corrupt");
    t.data = base + file->data_offset_ + t.offset;
    if (t.nbytes) spans.emplace_back(t.offset, t.offset + t.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      throw Error(where + ": two tensors overlap at data offset " + std::to_string(spans[i].first));
  return file;
}

}  // namespace dsft::io
