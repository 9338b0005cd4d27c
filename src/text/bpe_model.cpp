// The BPE model of tokenizer.json: vocabulary, merges by rank, byte fallback, unknown token,
// ignore_merges, and a word cache shared across threads.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>

#include "text/hf_components.h"
#include "text/unicode.h"

namespace dsft::text::hf {

namespace {
std::atomic<uint64_t> next_serial{1};
}  // namespace

BpeModel::BpeModel(json::element m, const std::string& origin) : serial_(next_serial.fetch_add(1)) {
  std::string type = json::get_string(m, "type", origin, "model", std::string("BPE"));
  if (type != "BPE")
    throw Error(origin + ": model type \"" + type + "\" is not supported (only BPE is; SentencePiece models load from "
                "tokenizer.model)");
  if (json::has(m, "dropout")) {
    double d = 0;
    auto v = m["dropout"].value_unsafe();
    if (!v.get_double().get(d) && d != 0.0)
      throw Error(origin + ": model.dropout is " + std::to_string(d) + "; only null is supported (dropout is for training)");
  }
  ignore_merges_ = json::get_bool(m, "ignore_merges", false, origin, "model");
  byte_fallback_ = json::get_bool(m, "byte_fallback", false, origin, "model");
  fuse_unk_ = json::get_bool(m, "fuse_unk", false, origin, "model");
  prefix_ = json::get_string(m, "continuing_subword_prefix", origin, "model", std::string());
  suffix_ = json::get_string(m, "end_of_word_suffix", origin, "model", std::string());

  simdjson::dom::object vocab;
  if (json::require(m, "vocab", origin, "model").get_object().get(vocab))
    throw Error(origin + ": model.vocab must be an object of token -> id");
  vocab_.reserve(vocab.size());
  int64_t max_id = -1;
  for (auto kv : vocab) {
    int64_t id = json::get_int(kv.value, origin, "model.vocab[\"" + std::string(kv.key) + "\"]");
    if (id < 0 || id > INT32_MAX - 1) throw Error(origin + ": model.vocab id " + std::to_string(id) + " is out of range");
    max_id = std::max(max_id, id);
  }
  tokens_.resize(static_cast<size_t>(max_id + 1));
  has_token_.assign(static_cast<size_t>(max_id + 1), false);
  for (auto kv : vocab) {
    int64_t id = json::get_int(kv.value, origin, "model.vocab id");
    vocab_.set(kv.key, static_cast<int32_t>(id));
    tokens_[static_cast<size_t>(id)] = std::string(kv.key);
    has_token_[static_cast<size_t>(id)] = true;
  }

  if (json::has(m, "unk_token")) {
    unk_token_ = json::get_string(m, "unk_token", origin, "model");
    unk_id_ = vocab_.get(unk_token_);
    if (unk_id_ < 0) throw Error(origin + ": model.unk_token \"" + unk_token_ + "\" is not in model.vocab");
  }

  simdjson::dom::array merges;
  if (json::require(m, "merges", origin, "model").get_array().get(merges))
    throw Error(origin + ": model.merges must be an array");
  merges_.reserve(merges.size());
  int32_t rank = 0;
  for (auto e : merges) {
    std::string_view a, b;
    std::string_view line;
    if (!e.get_string().get(line)) {
      size_t sp = line.find(' ');
      if (sp == std::string_view::npos)
        throw Error(origin + ": merge " + std::to_string(rank) + " \"" + std::string(line) + "\" is not two tokens separated by a space");
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else {
      simdjson::dom::array pair;
      if (e.get_array().get(pair) || pair.size() != 2 || pair.at(0).get_string().get(a) || pair.at(1).get_string().get(b))
        throw Error(origin + ": merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    int32_t ia = vocab_.get(a), ib = vocab_.get(b);
    if (ia < 0 || ib < 0)
      throw Error(origin + ": merge " + std::to_string(rank) + " uses token \"" + std::string(ia < 0 ? a : b) + "\" that is not in model.vocab");
    std::string merged(a);
    merged.append(b.substr(std::min(prefix_.size(), b.size())));
    int32_t im = vocab_.get(merged);
    if (im < 0) throw Error(origin + ": merge " + std::to_string(rank) + " makes \"" + merged + "\", which is not in model.vocab");
    merges_.set(ia, ib, {rank, im});
    ++rank;
  }
  cache_ = std::make_unique<CacheShard[]>(kCacheShards);
  for (size_t s = 0; s < kCacheShards; ++s) cache_[s].slots.assign(kCacheShardCapacity * 2, -1);
}

bool BpeModel::enable_raw_bytes() {
  if (!prefix_.empty() || !suffix_.empty()) return false;
  const auto& t = ByteLevelTable::get();
  for (int b = 0; b < 256; ++b) byte_ids_[b] = vocab_.get(t.byte_to_utf8[b]);
  // Unmapped-bytes view of every token made only of table characters.
  raw_vocab_.reserve(vocab_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (!has_token_[id]) continue;
    const std::string& tok = tokens_[id];
    std::string raw;
    size_t i = 0;
    bool ok = true;
    while (i < tok.size()) {
      int b = t.cp_to_byte(unicode::next_cp(tok, i));
      if (b < 0) { ok = false; break; }
      raw.push_back(static_cast<char>(b));
    }
    if (ok) {
      // Several ids can share raw bytes only if the vocabulary lists a string twice; keep the
      // one the mapped form finds.
      if (vocab_.get(tok) == static_cast<int32_t>(id)) raw_vocab_.set(raw, static_cast<int32_t>(id));
    }
  }
  raw_ready_ = true;
  return true;
}

void BpeModel::initial_symbols(std::string_view w, std::vector<int32_t>& word) const {
  // As the Rust library's merge_word: one symbol per character (with the subword prefix and
  // word suffix), byte fallback, then the unknown token.
  bool have_unk = false;
  size_t i = 0;
  std::string s;
  while (i < w.size()) {
    size_t start = i;
    i += unicode::utf8_len(static_cast<unsigned char>(w[i]));
    s.clear();
    if (start > 0) s += prefix_;
    s.append(w.substr(start, i - start));
    if (i == w.size()) s += suffix_;
    int32_t id = vocab_.get(s);
    if (id >= 0) {
      if (have_unk) { word.push_back(unk_id_); have_unk = false; }
      word.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      char name[8];
      for (unsigned char b : s) {
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t bid = vocab_.get(name);
        if (bid < 0) { bytes.clear(); break; }
        bytes.push_back(bid);
      }
      if (!bytes.empty()) {
        word.insert(word.end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (have_unk && !fuse_unk_) word.push_back(unk_id_);
      have_unk = true;
    }
    // Without an unknown token the character is dropped, as in the Rust library.
  }
  if (have_unk) word.push_back(unk_id_);
}

void BpeModel::merge(std::vector<int32_t>& w) const {
  size_t n = w.size();
  if (n < 2) return;
  constexpr size_t kLinearMax = 64;
  if (n <= kLinearMax) {
    // Short words: scan for the lowest-ranked adjacent pair, leftmost first.
    int32_t ranks[kLinearMax], ids[kLinearMax];
    auto look = [&](size_t i) {
      const PairMap::Value* v = merges_.get(w[i], w[i + 1]);
      ranks[i] = v ? v->rank : INT32_MAX;
      ids[i] = v ? v->id : -1;
    };
    for (size_t i = 0; i + 1 < n; ++i) look(i);
    while (n > 1) {
      size_t best = 0;
      int32_t br = ranks[0];
      for (size_t i = 1; i + 1 < n; ++i) {
        if (ranks[i] < br) { br = ranks[i]; best = i; }
      }
      if (br == INT32_MAX) break;
      w[best] = ids[best];
      w.erase(w.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      if (best + 2 < n) {
        std::copy(ranks + best + 2, ranks + n - 1, ranks + best + 1);
        std::copy(ids + best + 2, ids + n - 1, ids + best + 1);
      }
      --n;
      if (best + 1 < n) look(best);
      if (best > 0) look(best - 1);
    }
    return;
  }
  // Long words: linked symbols and a min-heap of (rank, position) packed in one integer, as the
  // Rust library's queue orders them; an entry whose pair has changed since is skipped.
  struct Sym {
    int32_t id, prev, next;
  };
  thread_local std::vector<Sym> sym;
  thread_local std::vector<uint64_t> heap;
  sym.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i)
    sym[i] = {w[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  auto pack = [](int32_t rank, int32_t pos) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(rank)) << 32) | static_cast<uint32_t>(pos);
  };
  auto later = std::greater<uint64_t>();
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const auto* v = merges_.get(w[i], w[i + 1])) heap.push_back(pack(v->rank, static_cast<int32_t>(i)));
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    uint64_t top = heap.back();
    heap.pop_back();
    auto rank = static_cast<int32_t>(top >> 32);
    auto pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
    Sym& left = sym[static_cast<size_t>(pos)];
    if (left.id < 0 || left.next < 0) continue;  // merged away, or last symbol
    Sym& right = sym[static_cast<size_t>(left.next)];
    const auto* v = merges_.get(left.id, right.id);
    if (!v || v->rank != rank) continue;  // stale: ranks identify pairs
    left.id = v->id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) sym[static_cast<size_t>(left.next)].prev = pos;
    if (left.prev >= 0) {
      if (const auto* pv = merges_.get(sym[static_cast<size_t>(left.prev)].id, left.id)) {
        heap.push_back(pack(pv->rank, left.prev));
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (left.next >= 0) {
      if (const auto* nv = merges_.get(left.id, sym[static_cast<size_t>(left.next)].id)) {
        heap.push_back(pack(nv->rank, pos));
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  w.clear();
  for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) w.push_back(sym[static_cast<size_t>(i)].id);
}

void BpeModel::tokenize_uncached(std::string_view piece, bool raw_bytes, std::vector<int32_t>& word) const {
  word.clear();
  if (raw_bytes) {
    bool ok = true;
    for (unsigned char b : piece) {
      int32_t id = byte_ids_[b];
      if (id < 0) { ok = false; break; }
      word.push_back(id);
    }
    if (!ok) {
      word.clear();
      const auto& t = ByteLevelTable::get();
      std::string mapped;
      for (unsigned char b : piece) mapped += t.byte_to_utf8[b];
      initial_symbols(mapped, word);
    }
  } else {
    initial_symbols(piece, word);
  }
  merge(word);
}

void BpeModel::tokenize(std::string_view piece, bool raw_bytes, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (raw_bytes) {
    if (piece.size() == 1) {
      int32_t id = byte_ids_[static_cast<unsigned char>(piece[0])];
      if (id >= 0) { out.push_back(id); return; }
    }
    if (ignore_merges_) {
      int32_t id = raw_vocab_.get(piece);
      if (id >= 0) { out.push_back(id); return; }
    }
  } else if (ignore_merges_) {
    int32_t id = vocab_.get(piece);
    if (id >= 0) { out.push_back(id); return; }
  }
  // Per-thread front cache for short words: no lock, no shared cache line.
  struct Front {
    uint64_t hash = 0, owner = 0;
    uint8_t len = 0, n_ids = 0;
    char key[kFrontMaxKey];
    int32_t ids[kFrontMaxIds];
  };
  thread_local std::unique_ptr<Front[]> front(new Front[kFrontSize]);
  thread_local std::vector<int32_t> word;
  uint64_t h = hash_bytes(piece);
  Front* fe = nullptr;
  if (piece.size() <= kFrontMaxKey) {
    fe = &front[h & (kFrontSize - 1)];
    if (fe->hash == h && fe->owner == serial_ && fe->len == piece.size() &&
        std::memcmp(fe->key, piece.data(), piece.size()) == 0) {
      out.insert(out.end(), fe->ids, fe->ids + fe->n_ids);
      return;
    }
  }
  auto fill_front = [&](const std::vector<int32_t>& ids) {
    if (!fe || ids.size() > kFrontMaxIds) return;
    fe->hash = h;
    fe->owner = serial_;
    fe->len = static_cast<uint8_t>(piece.size());
    fe->n_ids = static_cast<uint8_t>(ids.size());
    std::memcpy(fe->key, piece.data(), piece.size());
    std::copy(ids.begin(), ids.end(), fe->ids);
  };
  if (piece.size() >= kCacheMaxKey) {
    tokenize_uncached(piece, raw_bytes, word);
    out.insert(out.end(), word.begin(), word.end());
    return;
  }
  CacheShard& shard = cache_[h >> 59];
  size_t mask = shard.slots.size() - 1;
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    for (size_t i = (h >> 5) & mask;; i = (i + 1) & mask) {
      int32_t k = shard.slots[i];
      if (k < 0) break;
      auto ku = static_cast<size_t>(k);
      if (shard.hashes[ku] == h && shard.keys[ku] == piece) {
        const auto& v = shard.values[ku];
        out.insert(out.end(), v.begin(), v.end());
        fill_front(v);
        return;
      }
    }
  }
  tokenize_uncached(piece, raw_bytes, word);
  out.insert(out.end(), word.begin(), word.end());
  fill_front(word);
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.keys.size() >= kCacheShardCapacity) {
    // Full: start over rather than track recency; the hot words come back at once.
    shard.hashes.clear();
    shard.keys.clear();
    shard.values.clear();
    std::fill(shard.slots.begin(), shard.slots.end(), -1);
  }
  for (size_t i = (h >> 5) & mask;; i = (i + 1) & mask) {
    int32_t k = shard.slots[i];
    if (k < 0) {
      shard.slots[i] = static_cast<int32_t>(shard.keys.size());
      shard.hashes.push_back(h);
      shard.keys.emplace_back(piece);
      shard.values.push_back(word);
      return;
    }
    auto ku = static_cast<size_t>(k);
    if (shard.hashes[ku] == h && shard.keys[ku] == piece) return;  // another thread added it
  }
}

}  // namespace dsft::text::hf
