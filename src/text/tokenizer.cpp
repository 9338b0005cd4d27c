// load_tokenizer: picks tokenizer.json or tokenizer.model in a model directory and reads the
// special-token names of tokenizer_config.json; encode_batch on every core.
#include "dsft/text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "dsft/util/error.h"
#include "text/hf_tokenizer.h"

#ifdef DSFT_HAVE_SENTENCEPIECE  // set by src/text/CMakeLists.txt
#include "dsft/text/sentencepiece.h"
#endif

namespace dsft::text {
namespace fs = std::filesystem;

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  size_t n_threads = std::max(1u, std::thread::hardware_concurrency());
  n_threads = std::min(n_threads, texts.size());
  if (n_threads <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i], add_special_tokens);
    return out;
  }
  // Texts are taken in small chunks from a shared counter so that long texts do not leave one
  // thread working alone at the end.
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mu;
  size_t chunk = std::clamp<size_t>(texts.size() / (n_threads * 16), 1, 64);
  auto work = [&] {
    while (!failed.load(std::memory_order_relaxed)) {
      size_t begin = next.fetch_add(chunk);
      if (begin >= texts.size()) return;
      size_t end = std::min(begin + chunk, texts.size());
      try {
        for (size_t i = begin; i < end; ++i) out[i] = encode(texts[i], add_special_tokens);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        failed = true;
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n_threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// bos_token / eos_token / pad_token: a string, {"content": ...}, or null.
std::optional<std::string> special_name(const nlohmann::json& cfg, const char* key, const std::string& origin) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  throw Error(origin + ": " + key + " must be a string, an object with a string \"content\", or null");
}

void apply_config(Tokenizer& tok, const std::string& path, const hf::HfTokenizer* hf) {
  // nlohmann rather than simdjson: configs hold integers beyond 64 bits (model_max_length).
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + " is not valid JSON: " + e.what());
  }
  if (!cfg.is_object()) throw Error(path + ": expected a JSON object");
  auto resolve = [&](const char* key) -> std::optional<int32_t> {
    auto name = special_name(cfg, key, path);
    if (!name) return std::nullopt;
    auto id = tok.token_to_id(*name);
    if (!id) throw Error(path + ": " + key + " \"" + *name + "\" is not a token of this tokenizer");
    return id;
  };
  tok.bos_id = resolve("bos_token");
  tok.eos_id = resolve("eos_token");
  tok.pad_id = resolve("pad_token");
  auto ab = cfg.find("add_bos_token");
  bool add_bos = ab != cfg.end() && ab->is_boolean() && ab->get<bool>();
  // transformers rebuilds the post-processor from add_bos_token for Llama-style tokenizers; the
  // tokenizer.json post-processor itself may not add BOS, so training prepends it then.
  tok.add_bos_for_training = add_bos && tok.bos_id && !(hf && hf->post_processor_prepends(*tok.bos_id));
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error("tokenizer file " + path + " does not exist");
  std::string text = read_file(path);
  return std::make_unique<hf::HfTokenizer>(text, path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("tokenizer directory " + dir + " does not exist");
  fs::path json_path = fs::path(dir) / "tokenizer.json";
  fs::path sp_path = fs::path(dir) / "tokenizer.model";
  std::unique_ptr<Tokenizer> tok;
  const hf::HfTokenizer* hf = nullptr;
  if (fs::is_regular_file(json_path, ec)) {
    tok = load_tokenizer_json(json_path.string());
    hf = static_cast<const hf::HfTokenizer*>(tok.get());
  } else if (fs::is_regular_file(sp_path, ec)) {
#ifdef DSFT_HAVE_SENTENCEPIECE
    tok = load_sentencepiece_tokenizer(sp_path.string());
#else
    throw Error(sp_path.string() + ": tokenizer.model support not built; hint: provide tokenizer.json");
#endif
  } else {
    throw Error("no tokenizer.json or tokenizer.model in " + dir);
  }
  fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  if (fs::is_regular_file(cfg, ec)) apply_config(*tok, cfg.string(), hf);
  return tok;
}

}  // namespace dsft::text
