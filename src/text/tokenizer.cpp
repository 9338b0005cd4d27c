// load_tokenizer: picks tokenizer.json or tokenizer.model in a model directory and reads the
// special-token names of tokenizer_config.json; encode_batch on every core.
#include "dsft/text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <exception>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "dsft/util/error.h"
#include "text/hf_tokenizer.h"

#include "dsft/text/sentencepiece.h"

namespace dsft::text {
namespace fs = std::filesystem;

namespace {

// Worker threads shared by every encode_batch call, started on first use. They live as long as
// the process, so their per-thread state (regex match data, the BPE front cache) stays warm.
class WorkerPool {
 public:
  static WorkerPool& get() {
    static WorkerPool* pool = new WorkerPool();  // never destroyed: workers may outlive statics
    return *pool;
  }
  size_t size() const { return workers_; }
  void submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  WorkerPool() {
    workers_ = std::max(1u, std::thread::hardware_concurrency()) - 1;
    for (size_t i = 0; i < workers_; ++i) std::thread([this] { run(); }).detach();
  }
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  size_t workers_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
};

}  // namespace

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  WorkerPool& pool = WorkerPool::get();
  size_t helpers = std::min(pool.size(), texts.size() > 0 ? texts.size() - 1 : 0);
  // Texts are taken in small chunks from a shared counter so that long texts do not leave one
  // thread working alone at the end. The caller works too; a helper that starts after all chunks
  // are taken returns without touching the texts (the state it sees is its own copy's).
  struct State {
    std::atomic<size_t> next{0};
    std::atomic<size_t> active{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex mu;
    std::condition_variable done;
  };
  auto st = std::make_shared<State>();
  size_t chunk = std::clamp<size_t>(texts.size() / ((helpers + 1) * 16), 1, 64);
  auto work = [this, st, chunk, &texts, &out, add_special_tokens] {
    st->active.fetch_add(1);
    while (!st->failed.load(std::memory_order_relaxed)) {
      size_t begin = st->next.fetch_add(chunk);
      if (begin >= texts.size()) break;
      size_t end = std::min(begin + chunk, texts.size());
      try {
        for (size_t i = begin; i < end; ++i) out[i] = encode(texts[i], add_special_tokens);
      } catch (...) {
        std::lock_guard<std::mutex> lock(st->mu);
        if (!st->error) st->error = std::current_exception();
        st->failed = true;
      }
    }
    std::lock_guard<std::mutex> lock(st->mu);
    if (st->active.fetch_sub(1) == 1) st->done.notify_all();
  };
  for (size_t t = 0; t < helpers; ++t) {
    // Late helpers find `next` past the end and leave before using texts or out.
    pool.submit([st, work, n = texts.size()] {
      if (st->next.load() >= n) return;
      work();
    });
  }
  work();
  {
    std::unique_lock<std::mutex> lock(st->mu);
    st->done.wait(lock, [&] { return st->active.load() == 0; });
  }
  if (st->error) std::rethrow_exception(st->error);
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
    tok = load_sentencepiece_tokenizer(sp_path.string());
  } else {
    throw Error("no tokenizer.json or tokenizer.model in " + dir);
  }
  fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  if (fs::is_regular_file(cfg, ec)) apply_config(*tok, cfg.string(), hf);
  return tok;
}

}  // namespace dsft::text
