// e2e: `dsft forward` on every fixture model reproduces the reference logits; `dsft init`
// writes a model that `dsft forward` runs; failures exit 1 with a one-line reason.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "e2e/run.h"

namespace fs = std::filesystem;

namespace {

// A minimal safetensors reader for the test's own checks (F32 / I64 tensors only), so that this
// program does not depend on the library code it is checking.
struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

std::map<std::string, Tensor> read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::map<std::string, Tensor> out;
  auto j = nlohmann::json::parse(header);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    Tensor t;
    t.dtype = it.value()["dtype"];
    t.shape = it.value()["shape"].get<std::vector<int64_t>>();
    auto off = it.value()["data_offsets"].get<std::vector<size_t>>();
    t.bytes.assign(data.begin() + off[0], data.begin() + off[1]);
    out[it.key()] = t;
  }
  return out;
}

void write_ids(const std::string& path, const std::vector<int64_t>& ids, int64_t b, int64_t t) {
  nlohmann::json h = {
      {"input_ids", {{"dtype", "I64"}, {"shape", {b, t}}, {"data_offsets", {0, ids.size() * 8}}}}};
  std::string hs = h.dump();
  uint64_t n = hs.size();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(hs.data(), static_cast<std::streamsize>(n));
  f.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 8));
}

std::vector<float> floats(const Tensor& t) {
  std::vector<float> v(t.bytes.size() / 4);
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("dsft_e2e_fwd_" + std::to_string(::getpid()) + "_" + name)).string();
}

}  // namespace

TEST(Forward, EveryFixtureMatchesReferenceThroughTheBinary) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(DSFT_FIXTURES_DIR) / "models")) {
    if (!fs::exists(e.path() / "expected.safetensors")) continue;
    const std::string name = e.path().filename().string();
    const std::string out = tmp(name + ".safetensors");
    auto r = e2e::run_dsft("forward --model " + e.path().string() + " --input " +
                           (e.path() / "expected.safetensors").string() + " -o " + out);
    ASSERT_EQ(r.code, 0) << name << ": " << r.out;
    auto got = read_safetensors(out);
    auto want = read_safetensors((e.path() / "expected.safetensors").string());
    ASSERT_EQ(got.at("logits").dtype, "F32");
    ASSERT_EQ(got.at("logits").shape, want.at("logits").shape) << name;
    auto g = floats(got.at("logits")), w = floats(want.at("logits"));
    double diff = 0, scale = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(g[i] - w[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(w[i])));
    }
    std::printf("[e2e parity] %-28s ratio %.3e\n", name.c_str(), diff / scale);
    EXPECT_LE(diff / scale, 1e-4) << name;
    fs::remove(out);
    ++n;
  }
  EXPECT_GE(n, 8);
}

TEST(Forward, InitThenForwardInBf16) {
  const std::string dir = tmp("model");
  fs::remove_all(dir);
  auto r = e2e::run_dsft("init --arch deepseek_v3 --preset tiny --set vocab_size=100 --seed 3 -o " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string ids = tmp("ids.safetensors"), out = tmp("logits.safetensors");
  write_ids(ids, {1, 5, 7, 99, 0, 3}, 2, 3);
  r = e2e::run_dsft("forward --model " + dir + " --input " + ids + " -o " + out + " --dtype bfloat16");
  ASSERT_EQ(r.code, 0) << r.out;
  auto got = read_safetensors(out);
  EXPECT_EQ(got.at("logits").shape, (std::vector<int64_t>{2, 3, 100}));
  for (float v : floats(got.at("logits"))) ASSERT_TRUE(std::isfinite(v));
  // refusing to overwrite
  r = e2e::run_dsft("init --arch deepseek_v3 --preset tiny -o " + dir);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  // an id outside the vocabulary is a one-line failure
  write_ids(ids, {1, 100}, 1, 2);
  r = e2e::run_dsft("forward --model " + dir + " --input " + ids + " -o " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("outside the vocabulary"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  fs::remove_all(dir);
  fs::remove(ids);
  fs::remove(out);
}

TEST(Forward, MissingModelIsOneLineFailure) {
  auto r = e2e::run_dsft("forward --model /nonexistent/model --input x.safetensors -o y.safetensors");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("dsft: "), std::string::npos) << r.out;
}
