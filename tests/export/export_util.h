// Helpers of the export tests: temporary directories, model directories built from the fixture
// checkpoints with a synthetic byte-level BPE tokenizer of the model's vocabulary size (the
// fixtures ship no tokenizer), and llama.cpp run through scripts/llama_cpp (node-llama-cpp).
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dsft/export/gguf_export.h"

namespace dsft::exporter::test {

namespace fs = std::filesystem;
using nlohmann::json;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "dsft-export-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

inline std::string fixture_model(const std::string& name) {
  return (fs::path(DSFT_FIXTURES_DIR) / "models" / name).string();
}
inline std::string fixture_tokenizer(const std::string& name) {
  return (fs::path(DSFT_FIXTURES_DIR) / "tokenizers" / name).string();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline json read_json_file(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// GPT-2's byte -> printable character table (ByteLevel's alphabet), as UTF-8.
inline std::vector<std::string> byte_chars() {
  std::vector<int> bs, cs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  std::vector<std::string> out(256);
  for (size_t i = 0; i < bs.size(); ++i) {
    const int c = cs[i];
    std::string u;
    if (c < 0x80) u = std::string(1, static_cast<char>(c));
    else {
      u += static_cast<char>(0xC0 | (c >> 6));
      u += static_cast<char>(0x80 | (c & 0x3F));
    }
    out[bs[i]] = u;
  }
  return out;
}

// A synthetic byte-level BPE tokenizer with exactly `vocab_size` ids: three special tokens
// (0..2), the 256 byte tokens, then merged tokens (space + letter, letter + 'e', ...) up to the
// size. bos/eos name two of the specials, as the model's config.json does.
inline void write_synthetic_tokenizer(const std::string& dir, int64_t vocab_size, int64_t bos, int64_t eos) {
  json vocab = json::object(), merges = json::array(), added = json::array();
  for (int i = 0; i < 3; ++i) {
    const std::string t = "<|special_" + std::to_string(i) + "|>";
    vocab[t] = i;
    added.push_back({{"id", i}, {"content", t}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  const auto chars = byte_chars();
  int64_t id = 3;
  for (int b = 0; b < 256; ++b) vocab[chars[b]] = id++;
  std::vector<std::pair<std::string, std::string>> pairs;
  for (char c = 'a'; c <= 'z'; ++c) pairs.push_back({chars[' '], std::string(1, c)});
  for (char c = 'a'; c <= 'z'; ++c) pairs.push_back({std::string(1, c), "e"});
  for (const char* p : {"th", "in", "on", "an", "ou", "is", "at", "or", "it", "al", "ar", "st", "nd", "to"})
    pairs.push_back({std::string(1, p[0]), std::string(1, p[1])});
  // Larger vocabularies (the 512-token tiny presets): every other letter pair.
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) pairs.push_back({std::string(1, a), std::string(1, b)});
  for (const auto& [a, b] : pairs) {
    if (id >= vocab_size) break;
    if (vocab.contains(a + b)) continue;
    vocab[a + b] = id++;
    merges.push_back(a + " " + b);
  }
  if (id != vocab_size) throw std::runtime_error("synthetic tokenizer cannot reach vocab size " + std::to_string(vocab_size));
  json tok = {{"version", "1.0"},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", false}}}};
  write_text(dir + "/tokenizer.json", tok.dump());
  json cfg = {{"bos_token", "<|special_" + std::to_string(bos) + "|>"},
              {"eos_token", "<|special_" + std::to_string(eos) + "|>"},
              {"add_bos_token", false}};
  write_text(dir + "/tokenizer_config.json", cfg.dump());
}

// An f32 GGUF export of a model directory (the encoding the llama.cpp parity checks use).
inline GgufExportReport export_f32(const std::string& dir, const std::string& out, const std::string& pre = "gpt-2") {
  GgufExportOptions o;
  o.model_dir = dir;
  o.output_path = out;
  o.out_type = GgufOutType::f32;
  o.tokenizer_pre = pre;
  return export_gguf(o);
}

// A model directory for a fixture checkpoint: its config.json and weights (linked), plus the
// synthetic tokenizer.
inline std::string fixture_model_dir(const TempDir& tmp, const std::string& name) {
  const std::string dir = tmp.path(name);
  fs::create_directories(dir);
  const std::string src = fixture_model(name);
  fs::create_symlink(src + "/model.safetensors", dir + "/model.safetensors");
  fs::copy_file(src + "/config.json", dir + "/config.json");
  const json cfg = read_json_file(dir + "/config.json");
  write_synthetic_tokenizer(dir, cfg["vocab_size"].get<int64_t>(), cfg["bos_token_id"].get<int64_t>(),
                            cfg["eos_token_id"].get<int64_t>());
  return dir;
}

inline std::string run_capture(const std::string& cmd, int& code) {
  std::string out;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    code = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

// The node-llama-cpp prefix (installed on first use and cached: DSFT_LLAMA_CPP_PREFIX or
// $TMPDIR/dsft-node-llama-cpp), or nullopt when it cannot be installed (no npm / offline).
inline std::optional<std::string> llama_cpp_prefix() {
  static std::optional<std::optional<std::string>> cached;
  if (cached) return *cached;
  const char* env = std::getenv("DSFT_LLAMA_CPP_PREFIX");
  const std::string prefix = env && *env ? env : (fs::temp_directory_path() / "dsft-node-llama-cpp").string();
  int code = 0;
  const std::string out = run_capture(std::string(DSFT_SOURCE_DIR) + "/scripts/llama_cpp/ensure.sh '" + prefix +
                                          "' 2>&1 && command -v node >/dev/null",
                                      code);
  if (code != 0) {
    std::fprintf(stderr, "[llama.cpp] unavailable (ensure.sh exit %d): %s\n", code, out.c_str());
    cached = std::optional<std::string>();
  } else {
    cached = prefix;
  }
  return *cached;
}

#define DSFT_REQUIRE_LLAMA_CPP(prefix_var)                                                   \
  const auto prefix_var##_opt = ::dsft::exporter::test::llama_cpp_prefix();                 \
  if (!prefix_var##_opt) GTEST_SKIP() << "node-llama-cpp could not be installed (npm offline?)"; \
  const std::string prefix_var = *prefix_var##_opt

// Runs scripts/llama_cpp/run.mjs on a request and returns its "results" array.
inline json run_llama_cpp(const std::string& prefix, const TempDir& tmp, const json& request) {
  static int counter = 0;
  const std::string req = tmp.path("llama-request-" + std::to_string(counter++) + ".json");
  write_text(req, request.dump());
  int code = 0;
  const std::string err = tmp.path("llama-stderr.txt");
  const std::string out = run_capture("node '" + std::string(DSFT_SOURCE_DIR) + "/scripts/llama_cpp/run.mjs' '" + prefix +
                                          "' '" + req + "' 2>'" + err + "'",
                                      code);
  if (code != 0) {
    std::ifstream e(err);
    const std::string msg((std::istreambuf_iterator<char>(e)), {});
    throw std::runtime_error("llama.cpp run failed (exit " + std::to_string(code) + "): " + msg);
  }
  return json::parse(out).at("results");
}

}  // namespace dsft::exporter::test
