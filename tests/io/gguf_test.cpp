// GGUF writer/reader: round trip of every metadata type and tensor type, byte layout (header
// fields, alignment, offsets), Q8_0 against an independent reference, corrupt files refused.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "dsft/io/gguf.h"
#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "io/test_util.h"

namespace dsft::io {
namespace {

using test::TempDir;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

template <class T>
T at(const std::string& bytes, size_t pos) {
  T v;
  std::memcpy(&v, bytes.data() + pos, sizeof v);
  return v;
}

std::function<std::vector<uint8_t>()> bytes_of(const void* p, size_t n) {
  std::vector<uint8_t> v(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  return [v] { return v; };
}

TEST(GgufTest, RoundTripsEveryMetadataType) {
  TempDir tmp;
  GgufWriter w;
  w.set("t.u8", GgufValue::u8(250));
  w.set("t.i8", GgufValue::i8(-120));
  w.set("t.u16", GgufValue::u16(65000));
  w.set("t.i16", GgufValue::i16(-32000));
  w.set("t.u32", GgufValue::u32(4000000000u));
  w.set("t.i32", GgufValue::i32(-2000000000));
  w.set("t.u64", GgufValue::u64(18000000000000000000ull));
  w.set("t.i64", GgufValue::i64(-9000000000000000000ll));
  w.set("t.f32", GgufValue::f32(3.25f));
  w.set("t.f64", GgufValue::f64(-1e-300));
  w.set("t.bool", GgufValue::boolean(true));
  w.set("t.str", GgufValue::string("héllo\n世界"));
  w.set("t.empty", GgufValue::string(""));
  w.set("t.strs", GgufValue::strings({"a", "", "Ġt", "<｜end▁of▁sentence｜>"}));
  w.set("t.i32s", GgufValue::i32s({1, -2, 3}));
  w.set("t.f32s", GgufValue::f32s({0.5f, -0.25f}));
  w.set("t.bools", GgufValue::array(GgufType::BOOL, {GgufValue::boolean(false), GgufValue::boolean(true)}));
  w.set("t.u64s", GgufValue::array(GgufType::UINT64, {GgufValue::u64(1), GgufValue::u64(1ull << 40)}));
  w.set("t.noitems", GgufValue::array(GgufType::INT8, {}));
  w.set("t.u8", GgufValue::u8(7));  // replaces, keeps position
  const float one = 1.0f;
  w.add_tensor({"x", GgmlType::F32, {1}, bytes_of(&one, 4)});
  const std::string path = tmp.path("m.gguf");
  w.write(path);

  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  ASSERT_EQ(f->metadata().size(), w.metadata().size());
  for (size_t i = 0; i < w.metadata().size(); ++i) {
    EXPECT_EQ(f->metadata()[i].first, w.metadata()[i].first);
    EXPECT_EQ(f->metadata()[i].second, w.metadata()[i].second) << w.metadata()[i].first;
  }
  EXPECT_EQ(f->metadata()[0].first, "general.alignment");
  EXPECT_EQ(f->at("general.alignment").as_u64(), 32u);
  EXPECT_EQ(f->metadata()[1].first, "t.u8");
  EXPECT_EQ(f->at("t.u8").as_u64(), 7u);
  EXPECT_EQ(f->at("t.i8").as_i64(), -120);
  EXPECT_EQ(f->at("t.u16").as_u64(), 65000u);
  EXPECT_EQ(f->at("t.i16").as_i64(), -32000);
  EXPECT_EQ(f->at("t.u32").as_u64(), 4000000000u);
  EXPECT_EQ(f->at("t.i32").as_i64(), -2000000000);
  EXPECT_EQ(f->at("t.u64").as_u64(), 18000000000000000000ull);
  EXPECT_EQ(f->at("t.i64").as_i64(), -9000000000000000000ll);
  EXPECT_EQ(f->at("t.f32").as_f64(), 3.25);
  EXPECT_EQ(f->at("t.f64").as_f64(), -1e-300);
  EXPECT_TRUE(f->at("t.bool").as_bool());
  EXPECT_EQ(f->at("t.str").as_string(), "héllo\n世界");
  EXPECT_EQ(f->at("t.empty").as_string(), "");
  EXPECT_EQ(f->at("t.strs").as_strings(), (std::vector<std::string>{"a", "", "Ġt", "<｜end▁of▁sentence｜>"}));
  EXPECT_EQ(f->at("t.i32s").as_i64s(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f->at("t.f32s").as_f64s(), (std::vector<double>{0.5, -0.25}));
  EXPECT_EQ(f->at("t.u64s").as_i64s(), (std::vector<int64_t>{1, 1ll << 40}));
  EXPECT_EQ(f->at("t.bools").items().size(), 2u);
  EXPECT_EQ(f->at("t.noitems").items().size(), 0u);
  EXPECT_EQ(f->at("t.noitems").elem_type(), GgufType::INT8);
  // Checked accessors refuse the wrong kind.
  EXPECT_THROW(f->at("t.str").as_u64(), Error);
  EXPECT_THROW(f->at("t.i8").as_u64(), Error);
  EXPECT_THROW(f->at("t.u64").as_i64(), Error);
  EXPECT_THROW(f->at("missing"), Error);
}

TEST(GgufTest, RoundTripsEveryTensorTypeWithAlignedOffsets) {
  TempDir tmp;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> a(3 * 5), b(64 * 2), c(7), d(2 * 3 * 4);
  for (auto* v : {&a, &b, &c, &d})
    for (auto& x : *v) x = nd(rng);
  std::vector<uint16_t> a16(a.size()), c_bf(c.size());
  for (size_t i = 0; i < a.size(); ++i) a16[i] = float_to_fp16(a[i]);
  for (size_t i = 0; i < c.size(); ++i) c_bf[i] = float_to_bf16(c[i]);
  std::vector<uint8_t> bq(b.size() / 32 * 34);
  quantize_q8_0(b.data(), static_cast<int64_t>(b.size()), bq.data());

  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.add_tensor({"a.f16", GgmlType::F16, {5, 3}, bytes_of(a16.data(), a16.size() * 2)});  // 30 bytes: next offset pads
  w.add_tensor({"b.q8", GgmlType::Q8_0, {64, 2}, bytes_of(bq.data(), bq.size())});
  w.add_tensor({"c.bf16", GgmlType::BF16, {7}, bytes_of(c_bf.data(), c_bf.size() * 2)});
  w.add_tensor({"d.f32", GgmlType::F32, {4, 3, 2}, bytes_of(d.data(), d.size() * 4)});
  const std::string path = tmp.path("t.gguf");
  w.write(path);

  const std::string bytes = read_all(path);
  EXPECT_EQ(bytes.size(), w.file_size());
  EXPECT_EQ(bytes.substr(0, 4), "GGUF");
  EXPECT_EQ(at<uint32_t>(bytes, 4), 3u);
  EXPECT_EQ(at<uint64_t>(bytes, 8), 4u);   // tensors
  EXPECT_EQ(at<uint64_t>(bytes, 16), 2u);  // keys
  // First key: general.alignment as u32 32.
  EXPECT_EQ(at<uint64_t>(bytes, 24), 17u);
  EXPECT_EQ(bytes.substr(32, 17), "general.alignment");
  EXPECT_EQ(at<uint32_t>(bytes, 49), 4u);  // GGUF_TYPE_UINT32
  EXPECT_EQ(at<uint32_t>(bytes, 53), 32u);

  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto f = GgufFile::open(path);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  ASSERT_EQ(f->tensors().size(), 4u);
  const auto& ta = f->tensor("a.f16");
  EXPECT_EQ(ta.ne, (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(ta.offset, 0u);
  EXPECT_EQ(ta.nbytes, 30u);
  const auto& tb = f->tensor("b.q8");
  EXPECT_EQ(tb.offset, 32u);  // 30 rounded up to the alignment
  EXPECT_EQ(tb.nbytes, 4u * 34);
  const auto& tc = f->tensor("c.bf16");
  EXPECT_EQ(tc.offset, 32u + 160);  // 136 rounded up
  const auto& td = f->tensor("d.f32");
  EXPECT_EQ(td.offset, 192u + 32);
  EXPECT_EQ(td.ne, (std::vector<int64_t>{4, 3, 2}));
  for (const auto& t : f->tensors()) {
    EXPECT_EQ((t.data - reinterpret_cast<const uint8_t*>(f->tensors()[0].data)) % 32, 0);
    EXPECT_EQ(static_cast<size_t>(t.data - reinterpret_cast<const uint8_t*>(f->tensors()[0].data)), t.offset);
  }
  // Padding bytes are zero.
  for (size_t i = f->data_offset() + 30; i < f->data_offset() + 32; ++i) EXPECT_EQ(bytes[i], 0);

  EXPECT_EQ(std::memcmp(ta.data, a16.data(), 30), 0);
  EXPECT_EQ(std::memcmp(tb.data, bq.data(), bq.size()), 0);
  EXPECT_EQ(std::memcmp(td.data, d.data(), d.size() * 4), 0);
  const auto af = f->to_float(ta);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(af[i], a[i], 2e-3 * std::fabs(a[i]) + 1e-6);
  const auto cf = f->to_float(tc);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(cf[i], bf16_to_float(c_bf[i]));
  const auto bf = f->to_float(tb);
  for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(bf[i], b[i], 0.02);
}

// An independent Q8_0 reference, written from the format's definition in double precision where
// that cannot change the result, and with C's round-half-away-from-zero.
void reference_q8_0(const std::vector<float>& x, std::vector<uint16_t>& d, std::vector<int8_t>& q) {
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float scale = amax / 127.0f;
    const float inv = scale == 0.0f ? 0.0f : 1.0f / scale;
    d.push_back(float_to_fp16(scale));
    for (int j = 0; j < 32; ++j) {
      const float v = x[b * 32 + j] * inv;
      const double r = v < 0 ? -std::floor(-static_cast<double>(v) + 0.5) : std::floor(static_cast<double>(v) + 0.5);
      q.push_back(static_cast<int8_t>(r));
    }
  }
}

TEST(GgufTest, Q8_0MatchesAnIndependentReference) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> x(32 * 40);
  for (auto& v : x) v = nd(rng);
  for (int j = 0; j < 32; ++j) x[32 * 3 + j] = 0.0f;                // all-zero block: d = 0, q = 0
  // d = 127 / 127 = 1 exactly, so x / d lands on exact halves: roundf rounds them away from zero
  // (nearbyint's ties-to-even would give other values).
  x[32 * 4] = 127.0f;
  for (int j = 1; j < 32; ++j) x[32 * 4 + j] = static_cast<float>(j - 16) + 0.5f;
  x[32 * 5] = -1e4f;                                                // a block dominated by one value
  std::vector<uint8_t> out(x.size() / 32 * 34);
  quantize_q8_0(x.data(), static_cast<int64_t>(x.size()), out.data());
  std::vector<uint16_t> d;
  std::vector<int8_t> q;
  reference_q8_0(x, d, q);
  for (size_t b = 0; b < d.size(); ++b) {
    EXPECT_EQ(at<uint16_t>(std::string(out.begin(), out.end()), b * 34), d[b]) << "block " << b;
    for (int j = 0; j < 32; ++j)
      ASSERT_EQ(static_cast<int8_t>(out[b * 34 + 2 + j]), q[b * 32 + j]) << "block " << b << " j " << j;
  }
  // The absmax element maps to +-127 and the zero block stays zero.
  EXPECT_EQ(static_cast<int8_t>(out[5 * 34 + 2]), -127);
  EXPECT_EQ(static_cast<int8_t>(out[4 * 34 + 2 + 18]), 3);    // 2.5 -> 3
  EXPECT_EQ(static_cast<int8_t>(out[4 * 34 + 2 + 13]), -3);   // -2.5 -> -3
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[3 * 34 + 2 + j], 0);
  EXPECT_EQ(at<uint16_t>(std::string(out.begin(), out.end()), 3 * 34), 0);
  std::vector<float> back(x.size());
  dequantize_q8_0(out.data(), static_cast<int64_t>(x.size()), back.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const float dd = fp16_to_float(d[i / 32]);
    // Half a step, plus what rounding d to fp16 (relative 2^-11) moves the largest level (127).
    EXPECT_LE(std::fabs(back[i] - x[i]), dd * (0.5f + 127.0f / 2048) + 1e-12f) << i;
  }
  EXPECT_THROW(quantize_q8_0(x.data(), 31, out.data()), Error);
}

TEST(GgufTest, Fp16ConversionRoundsToNearestEven) {
  EXPECT_EQ(float_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(float_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7C00);  // rounds up to infinity
  EXPECT_EQ(float_to_fp16(1.0f + 1.0f / 2048), 0x3C00);          // tie -> even (down)
  EXPECT_EQ(float_to_fp16(1.0f + 3.0f / 2048), 0x3C02);          // tie -> even (up)
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -24)), 0x0001);       // smallest subnormal
  EXPECT_EQ(float_to_fp16(std::nanf("")) & 0x7C00, 0x7C00);
  for (uint32_t h = 0; h < 0x7C00; ++h) EXPECT_EQ(float_to_fp16(fp16_to_float(static_cast<uint16_t>(h))), h);
}

TEST(GgufTest, WriterRefusesInconsistentTensors) {
  GgufWriter w;
  const float v[32] = {};
  w.add_tensor({"a", GgmlType::F32, {1}, bytes_of(v, 4)});
  EXPECT_THROW(w.add_tensor({"a", GgmlType::F32, {1}, bytes_of(v, 4)}), Error);
  EXPECT_THROW(w.add_tensor({"b", GgmlType::Q8_0, {31}, bytes_of(v, 34)}), Error);
  EXPECT_THROW(w.add_tensor({"c", GgmlType::F32, {1, 1, 1, 1, 1}, bytes_of(v, 4)}), Error);
  EXPECT_THROW(w.add_tensor({"d", GgmlType::F32, {-1}, bytes_of(v, 4)}), Error);
  EXPECT_THROW(w.add_tensor({std::string(64, 'n'), GgmlType::F32, {1}, bytes_of(v, 4)}), Error);
  EXPECT_THROW(GgufWriter(24), Error);
  // A producer that returns the wrong size fails the write and leaves no file behind.
  TempDir tmp;
  w.add_tensor({"short", GgmlType::F32, {2}, bytes_of(v, 4)});
  const std::string path = tmp.path("bad.gguf");
  EXPECT_THROW(w.write(path), Error);
  EXPECT_FALSE(std::ifstream(path).good());
}

class GgufCorruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GgufWriter w;
    w.set("general.architecture", GgufValue::string("llama"));
    w.set("tokenizer.ggml.tokens", GgufValue::strings({"a", "b"}));
    static const float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    w.add_tensor({"w", GgmlType::F32, {4, 2}, bytes_of(v, 32)});
    good_ = tmp_.path("good.gguf");
    w.write(good_);
    bytes_ = read_all(good_);
  }
  void expect_refused(const std::string& bytes, const std::string& fragment) {
    const std::string p = tmp_.path("bad.gguf");
    test::write_plain(p, bytes);
    try {
      GgufFile::open(p);
      ADD_FAILURE() << "accepted a corrupt file (expected: " << fragment << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  }
  template <class T>
  std::string patched(size_t pos, T v) {
    std::string b = bytes_;
    std::memcpy(b.data() + pos, &v, sizeof v);
    return b;
  }
  size_t find(const std::string& s) const { return bytes_.find(s); }
  TempDir tmp_;
  std::string good_, bytes_;
};

TEST_F(GgufCorruptTest, RefusesBrokenHeaders) {
  ASSERT_NO_THROW(GgufFile::open(good_));
  expect_refused("GGML" + bytes_.substr(4), "not a GGUF file");
  expect_refused(patched<uint32_t>(4, 4), "version 4");
  expect_refused(bytes_.substr(0, 20), "too short");
  expect_refused(patched<uint64_t>(16, 1ull << 60), "keys");
  expect_refused(patched<uint64_t>(8, 1ull << 60), "tensors");
  // Key length running past the end.
  expect_refused(patched<uint64_t>(24, 1ull << 40), "runs past the end");
  // general.alignment not a power of two.
  expect_refused(patched<uint32_t>(53, 24), "power of two");
  // Unknown value type of the second key.
  const size_t arch = find("general.architecture");
  expect_refused(patched<uint32_t>(arch + 20, 99), "unknown value type");
  // String array length larger than the file.
  const size_t toks = find("tokenizer.ggml.tokens");
  expect_refused(patched<uint64_t>(toks + 21 + 8, 1ull << 50), "array elements");
  // Truncated: the tensor data cut off.
  expect_refused(bytes_.substr(0, bytes_.size() - 4), "runs past the end");
}

TEST_F(GgufCorruptTest, RefusesBrokenTensorInfos) {
  const size_t name = bytes_.rfind(std::string("\x01\0\0\0\0\0\0\0w", 9));
  ASSERT_NE(name, std::string::npos);
  const size_t ndims = name + 9, ne0 = ndims + 4, type = ne0 + 16, offset = type + 4;
  expect_refused(patched<uint32_t>(ndims, 5), "dimensions");
  expect_refused(patched<uint32_t>(type, 77), "unknown ggml type");
  expect_refused(patched<uint32_t>(type, 8), "multiple of 32");  // Q8_0 with a row of 4
  expect_refused(patched<uint64_t>(offset, 8), "alignment");
  expect_refused(patched<uint64_t>(offset, 1 << 20), "runs past the end");
  expect_refused(patched<uint64_t>(ne0, 1ull << 62), "overflows");
}

}  // namespace
}  // namespace dsft::io
