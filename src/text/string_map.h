// Open-addressing hash maps for the tokenizer's hot lookups: token text -> id (keys kept in one
// arena) and (left id, right id) -> (merge rank, merged id).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace dsft::text {

inline uint64_t hash_bytes(std::string_view s) {
  // 64-bit FNV-1a over 8-byte words, then a final mix: fast on short tokens, good enough spread.
  uint64_t h = 0xcbf29ce484222325ULL ^ (s.size() * 0x9E3779B97F4A7C15ULL);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ tail) * 0x100000001b3ULL;
  h ^= h >> 32;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

class StringIdMap {
 public:
  // Inserts or overwrites.
  void set(std::string_view key, int32_t id) {
    if ((count_ + 1) * 2 > slots_.size()) grow();
    if (Slot* s = find_slot(key, hash_bytes(key))) {
      if (s->id >= 0) { s->id = id; return; }
      s->hash = hash_bytes(key);
      s->off = static_cast<uint32_t>(arena_.size());
      s->len = static_cast<uint32_t>(key.size());
      s->id = id;
      arena_.append(key);
      ++count_;
    }
  }
  int32_t get(std::string_view key) const {
    if (slots_.empty()) return -1;
    uint64_t h = hash_bytes(key);
    size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.hash == h && s.len == key.size() && std::memcmp(arena_.data() + s.off, key.data(), key.size()) == 0)
        return s.id;
    }
  }
  size_t size() const { return count_; }
  void reserve(size_t n) {
    size_t want = 16;
    while (want < n * 2) want <<= 1;
    if (want > slots_.size()) rehash(want);
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t off = 0, len = 0;
    int32_t id = -1;
  };
  Slot* find_slot(std::string_view key, uint64_t h) {
    size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.id < 0) return &s;
      if (s.hash == h && s.len == key.size() && std::memcmp(arena_.data() + s.off, key.data(), key.size()) == 0)
        return &s;
    }
  }
  void grow() { rehash(slots_.empty() ? 16 : slots_.size() * 2); }
  void rehash(size_t n) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(n, Slot{});
    size_t mask = n - 1;
    for (const Slot& s : old) {
      if (s.id < 0) continue;
      size_t i = s.hash & mask;
      while (slots_[i].id >= 0) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::string arena_;
  size_t count_ = 0;
};

class PairMap {
 public:
  struct Value {
    int32_t rank = -1;
    int32_t id = -1;
  };
  void reserve(size_t n) {
    size_t want = 16;
    while (want < n * 2) want <<= 1;
    slots_.assign(want, Slot{});
    mask_ = want - 1;
  }
  // Inserts or overwrites (a pair listed twice keeps its last rank, as in the Rust library).
  void set(int32_t a, int32_t b, Value v) {
    uint64_t k = key(a, b);
    for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == k) {
        slots_[i].key = k;
        slots_[i].value = v;
        return;
      }
    }
  }
  const Value* get(int32_t a, int32_t b) const {
    uint64_t k = key(a, b);
    for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return &slots_[i].value;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ULL;
  // Key and value in one 16-byte slot: a lookup costs one cache line (long words make many).
  struct Slot {
    uint64_t key = kEmpty;
    Value value;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static uint64_t mix(uint64_t k) {
    k *= 0x9E3779B97F4A7C15ULL;
    return k ^ (k >> 29);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

}  // namespace dsft::text
