// Corrupt and hostile safetensors files: each must be refused with a dsft::Error that names the
// file (and the tensor where there is one), never a crash or a read outside the file. These tests
// also run under AddressSanitizer + UBSan (scripts/test).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "io/test_util.h"

namespace fs = std::filesystem;
using namespace dsft::io;
using dsft::io::test::TempDir;

namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file made of a header length, the header text and `data_bytes` bytes of data.
std::string file_bytes(const std::string& header, size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\x01');
}

class SafetensorsCorrupt : public ::testing::Test {
 protected:
  TempDir tmp_;
  int n_ = 0;

  std::string write(const std::string& bytes) {
    const auto path = tmp_.path("case" + std::to_string(n_++) + ".safetensors");
    dsft::io::test::write_plain(path, bytes);
    return path;
  }

  // Opens `bytes` as a file and expects an error naming the file and every needle.
  void expect_refused(const std::string& bytes, const std::vector<std::string>& needles) {
    const auto path = write(bytes);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "accepted a corrupt file; expected an error with " << needles.front();
    } catch (const dsft::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << "message lacks the file name: " << msg;
      for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg << "\n  lacks: " << n;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    }
  }
};

}  // namespace

TEST_F(SafetensorsCorrupt, TooShortForTheHeaderLength) {
  expect_refused("", {"0 bytes", "too short"});
  expect_refused(std::string("\x10\0\0\0\0", 5), {"5 bytes", "too short"});
}

TEST_F(SafetensorsCorrupt, HeaderLengthPastEndOfFile) {
  expect_refused(le64(1000) + "{}", {"1000", "past the end"});
  expect_refused(le64(3), {"3", "past the end"});
}

TEST_F(SafetensorsCorrupt, HeaderLengthOver100MB) {
  expect_refused(le64(100'000'001) + "{}", {"100000001", "100 MB"});
  expect_refused(le64(~uint64_t{0}) + "{}", {"18446744073709551615", "100 MB"});
}

TEST_F(SafetensorsCorrupt, HeaderNotJsonOrNotAnObject) {
  expect_refused(le64(0), {"not valid JSON"});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", )", 0), {"not valid JSON"});
  expect_refused(file_bytes("[1, 2]", 0), {"array", "expected an object"});
  expect_refused(file_bytes("\"text\"", 0), {"string", "expected an object"});
  // Invalid UTF-8 inside a key.
  expect_refused(file_bytes("{\"w\xff\": {}}", 0), {"not valid JSON"});
}

TEST_F(SafetensorsCorrupt, EntryNotAnObject) {
  expect_refused(file_bytes(R"({"w": 3})", 0), {"tensor 'w'", "number", "expected an object"});
  expect_refused(file_bytes(R"({"w": [1]})", 0), {"tensor 'w'", "array"});
}

TEST_F(SafetensorsCorrupt, MissingOrIllTypedFields) {
  expect_refused(file_bytes(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4),
                 {"tensor 'w'", "\"dtype\""});
  expect_refused(file_bytes(R"({"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}})", 4),
                 {"tensor 'w'", "\"dtype\""});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4),
                 {"tensor 'w'", "\"shape\""});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}})", 4),
                 {"tensor 'w'", "\"shape\""});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": [1]}})", 4),
                 {"tensor 'w'", "\"data_offsets\""});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 4),
                 {"tensor 'w'", "\"data_offsets\""});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}})", 4),
                 {"tensor 'w'", "data_offsets"});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 4]}})", 4),
                 {"tensor 'w'", "data_offsets", "non-negative"});
}

TEST_F(SafetensorsCorrupt, UnknownDtype) {
  expect_refused(file_bytes(R"({"w": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}})", 1),
                 {"tensor 'w'", "'F7'"});
  expect_refused(file_bytes(R"({"w": {"dtype": "bf16", "shape": [1], "data_offsets": [0, 2]}})", 2),
                 {"tensor 'w'", "'bf16'"});
}

TEST_F(SafetensorsCorrupt, BadShapeDimensions) {
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}})", 16),
                 {"tensor 'w'", "-2", "non-negative"});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8),
                 {"tensor 'w'", "2.5"});
  expect_refused(file_bytes(R"({"w": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 8]}})", 8),
                 {"tensor 'w'", "18446744073709551615"});
}

TEST_F(SafetensorsCorrupt, ShapeTimesDtypeOverflows) {
  // 2^31 * 2^31 * 4 bytes wraps a 64-bit size to 0, which would match an empty byte range.
  expect_refused(
      file_bytes(R"({"w": {"dtype": "F32", "shape": [2147483648, 2147483648], "data_offsets": [0, 0]}})", 0),
      {"tensor 'w'", "overflows"});
}

TEST_F(SafetensorsCorrupt, ByteLengthDisagreesWithShape) {
  expect_refused(file_bytes(R"({"w": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 12]}})", 12),
                 {"tensor 'w'", "12 bytes", "[3, 4]", "BF16", "24"});
}

TEST_F(SafetensorsCorrupt, OffsetsReversedOrOutOfRange) {
  expect_refused(file_bytes(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", 8),
                 {"tensor 'w'", "[8, 4]", "begin after end"});
  expect_refused(file_bytes(R"({"w": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}})", 8),
                 {"tensor 'w'", "16", "past the data section", "8 bytes"});
  expect_refused(
      file_bytes(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551615, 18446744073709551616]}})", 8),
      {"tensor 'w'", "data_offsets"});
}

TEST_F(SafetensorsCorrupt, TruncatedData) {
  // A valid file cut short: the last tensor's end lies past the data that is left.
  std::vector<float> a(8, 1.0f), b(8, 2.0f);
  const auto good = write("");
  write_safetensors(good, {{"a", DType::F32, {8}, a.data(), 32}, {"b", DType::F32, {8}, b.data(), 32}});
  std::string bytes = dsft::util::read_file(good);
  bytes.resize(bytes.size() - 5);
  expect_refused(bytes, {"tensor 'b'", "past the data section"});
}

TEST_F(SafetensorsCorrupt, OverlappingTensors) {
  expect_refused(file_bytes(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})", 12),
                 {"'a'", "'b'", "overlap"});
  // Two tensors sharing the same bytes.
  expect_refused(file_bytes(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                "b": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})", 8),
                 {"'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsCorrupt, HolesAndUncoveredData) {
  expect_refused(file_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}})", 12),
                 {"tensor 'b'", "4 unused bytes"});
  expect_refused(file_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})", 8),
                 {"tensor 'a'", "4 unused bytes"});
  expect_refused(file_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})", 9),
                 {"'a'", "5 bytes after the last tensor"});
  expect_refused(file_bytes(R"({})", 3), {"3 bytes after the last tensor"});
}

TEST_F(SafetensorsCorrupt, MetadataNotAStringMap) {
  expect_refused(file_bytes(R"({"__metadata__": ["a"]})", 0), {"__metadata__", "array"});
  expect_refused(file_bytes(R"({"__metadata__": {"format": "pt", "epoch": 3}})", 0),
                 {"__metadata__", "'epoch'", "expected a string"});
}

TEST_F(SafetensorsCorrupt, DuplicateKeys) {
  expect_refused(file_bytes(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                "w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", 4),
                 {"'w' twice"});
  expect_refused(file_bytes(R"({"w": {"dtype": "U8", "dtype": "F32", "shape": [4], "data_offsets": [0, 4]}})", 4),
                 {"'dtype' twice"});
}

TEST_F(SafetensorsCorrupt, DeeplyNestedHeader) {
  // 200000 nested arrays must not exhaust the stack while parsing or freeing.
  const std::string deep = R"({"w": )" + std::string(200000, '[') + std::string(200000, ']') + "}";
  expect_refused(file_bytes(deep, 0), {"tensor 'w'", "array"});
}

TEST_F(SafetensorsCorrupt, NotARegularFileOrMissing) {
  for (const std::string& path : {tmp_.dir(), tmp_.path("missing.safetensors")}) {
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "opened " << path;
    } catch (const dsft::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST_F(SafetensorsCorrupt, ValidEdgeCasesAreAccepted) {
  // Keep the checks honest: empty tensors, scalars, an empty header and trailing header spaces
  // are all valid safetensors.
  const auto path = write(file_bytes(R"({"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
                                         "s": {"dtype": "F64", "shape": [], "data_offsets": [0, 8]},
                                         "__metadata__": {}}    )", 8));
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->at("e").nbytes, 0u);
  EXPECT_EQ(f->at("s").numel(), 1);
  EXPECT_EQ(SafetensorsFile::open(write(file_bytes("{}", 0)))->tensors().size(), 0u);
}

// Every truncation and many random byte flips of a real file: open() either succeeds with views
// inside the file or throws dsft::Error; under ASan any out-of-bounds read fails the test.
TEST_F(SafetensorsCorrupt, TruncationsAndBitFlipsNeverCrash) {
  std::vector<uint16_t> a(24, 0x3F80);
  std::vector<int64_t> b(3, 7);
  const auto good_path = write("");
  write_safetensors(good_path, {{"a", DType::BF16, {4, 6}, a.data(), 48}, {"b", DType::I64, {3}, b.data(), 24}},
                    {{"format", "pt"}});
  const std::string good = dsft::util::read_file(good_path);
  auto try_open = [&](const std::string& bytes) {
    const auto path = tmp_.path("fuzz.safetensors");
    dsft::io::test::write_plain(path, bytes);  // no fsync: thousands of cases
    try {
      const auto f = SafetensorsFile::open(path);
      size_t total = 0;
      for (const auto& [name, v] : f->tensors()) {
        unsigned sum = 0;
        for (size_t i = 0; i < v.nbytes; ++i) sum += v.data[i];
        (void)sum;
        total += v.nbytes;
      }
      EXPECT_LE(total, bytes.size());
      return true;
    } catch (const dsft::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      return false;
    }
  };
  EXPECT_TRUE(try_open(good));
  for (size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(try_open(good.substr(0, n))) << n;
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int i = 0; i < 1500; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % std::min<size_t>(bytes.size(), 8 + 200);
      bytes[pos] = static_cast<char>(rng());
    }
    accepted += try_open(bytes);
  }
  // Most damage to the header is detected (a flip inside a metadata value is harmless).
  EXPECT_LT(accepted, 1500);
}
