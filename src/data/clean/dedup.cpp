// Near-duplicate detection (one-permutation MinHash + LSH banding) and the hash-based split.
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "dsft/data/clean_filters.h"
#include "dsft/util/error.h"

namespace dsft::data {
namespace {

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bU;
  h ^= h >> 13;
  h *= 0xc2b2ae35U;
  h ^= h >> 16;
  return h;
}

// Next code point of valid UTF-8 (input is repaired before it gets here).
size_t next_cp(std::string_view s, size_t i, uint32_t* cp) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (i + len > s.size()) len = s.size() - i;
  uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < len; ++k) v = (v << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *cp = v;
  return len;
}

}  // namespace

MinHasher::MinHasher(int num_perm, int shingle_size) : num_perm_(num_perm), shingle_(shingle_size) {
  if (num_perm < 16 || num_perm > 1024) throw Error("num_perm must be in [16, 1024] (got " + std::to_string(num_perm) + ")");
  if (shingle_size < 1 || shingle_size > 32)
    throw Error("shingle size must be in [1, 32] (got " + std::to_string(shingle_size) + ")");
}

std::vector<uint32_t> MinHasher::signature(std::string_view text) const {
  // Code points, ASCII lower-cased, whitespace skipped: a re-wrapped or re-spaced copy is the
  // same document.
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    i += next_cp(text, i, &cp);
    if (cp == ' ' || cp == '\n' || cp == '\t' || cp == '\r') continue;
    if (cp >= 'A' && cp <= 'Z') cp += 32;
    cps.push_back(cp);
  }
  if (cps.empty()) return {};
  const uint32_t empty = std::numeric_limits<uint32_t>::max();
  std::vector<uint32_t> sig(num_perm_, empty);
  std::vector<uint8_t> filled(num_perm_, 0);
  size_t k = std::min<size_t>(shingle_, cps.size());
  // Polynomial rolling hash over k code points, then a strong mix: one hash per shingle.
  const uint64_t B = 0x100000001b3ULL;
  uint64_t pow = 1;
  for (size_t i = 1; i < k; ++i) pow *= B;
  uint64_t h = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (i >= k) h -= (cps[i - k] + 1) * pow;
    h = h * B + (cps[i] + 1);
    if (i + 1 < k) continue;
    uint64_t x = mix64(h ^ 0x9e3779b97f4a7c15ULL);
    uint32_t bin = static_cast<uint32_t>(((x >> 32) * static_cast<uint64_t>(num_perm_)) >> 32);
    uint32_t v = static_cast<uint32_t>(x);
    if (v < sig[bin]) sig[bin] = v;
    filled[bin] = 1;
  }
  // Rotation densification: an empty bin borrows from the next filled bin to its right,
  // re-hashed with the distance so that borrowed values differ per bin.
  for (int j = 0; j < num_perm_; ++j) {
    if (filled[j]) continue;
    for (int d = 1; d < num_perm_; ++d) {
      int src = (j + d) % num_perm_;
      if (filled[src]) {
        sig[j] = mix32(sig[src] + static_cast<uint32_t>(d) * 0x9e3779b9U);
        break;
      }
    }
  }
  return sig;
}

double signature_similarity(const uint32_t* a, const uint32_t* b, int n) {
  int same = 0;
  for (int i = 0; i < n; ++i) same += a[i] == b[i];
  return static_cast<double>(same) / n;
}

std::pair<int, int> lsh_bands_rows(double t, int num_perm) {
  // Probability that a pair with similarity s becomes a candidate: 1 - (1 - s^r)^b. Pick (b, r)
  // minimising the false-positive area below t plus the false-negative area above it.
  auto area = [](double lo, double hi, int b, int r, bool fp) {
    const int steps = 200;
    double sum = 0, dx = (hi - lo) / steps;
    for (int i = 0; i < steps; ++i) {
      double s = lo + (i + 0.5) * dx;
      double p = 1 - std::pow(1 - std::pow(s, r), b);
      sum += (fp ? p : 1 - p) * dx;
    }
    return sum;
  };
  double best = 1e9;
  std::pair<int, int> br{1, num_perm};
  for (int b = 1; b <= num_perm; ++b) {
    for (int r = 1; r * b <= num_perm; ++r) {
      double err = 0.5 * area(0, t, b, r, true) + 0.5 * area(t, 1, b, r, false);
      if (err < best) {
        best = err;
        br = {b, r};
      }
    }
  }
  return br;
}

NearDupIndex::NearDupIndex(int num_perm, double threshold) : num_perm_(num_perm), threshold_(threshold) {
  if (!(threshold > 0 && threshold <= 1))
    throw Error("near-duplicate threshold must be in (0, 1] (got " + std::to_string(threshold) + ")");
  auto [b, r] = lsh_bands_rows(threshold, num_perm);
  bands_ = b;
  rows_ = r;
}

uint64_t NearDupIndex::band_key(const uint32_t* sig, int band) const {
  return XXH3_64bits_withSeed(sig + band * rows_, sizeof(uint32_t) * rows_, static_cast<uint64_t>(band));
}

int64_t NearDupIndex::query(const std::vector<uint32_t>& sig, double* similarity) const {
  int64_t best = -1;
  double best_sim = 0;
  if (sig.size() != static_cast<size_t>(num_perm_)) return -1;
  for (int band = 0; band < bands_; ++band) {
    auto it = heads_.find(band_key(sig.data(), band));
    if (it == heads_.end()) continue;
    for (uint32_t doc = it->second; doc != UINT32_MAX; doc = next_[static_cast<size_t>(doc) * bands_ + band]) {
      double s = signature_similarity(sig.data(), sigs_.data() + static_cast<size_t>(doc) * num_perm_, num_perm_);
      // The most similar wins; on a tie the earliest.
      if (s >= threshold_ && (s > best_sim || (s == best_sim && static_cast<int64_t>(doc) < best))) {
        best = doc;
        best_sim = s;
      }
    }
  }
  if (similarity) *similarity = best_sim;
  return best;
}

void NearDupIndex::insert(const std::vector<uint32_t>& sig) {
  if (sig.size() != static_cast<size_t>(num_perm_)) return;
  uint32_t doc = static_cast<uint32_t>(n_++);
  sigs_.insert(sigs_.end(), sig.begin(), sig.end());
  next_.resize(static_cast<size_t>(n_) * bands_, UINT32_MAX);
  for (int band = 0; band < bands_; ++band) {
    auto [it, fresh] = heads_.try_emplace(band_key(sig.data(), band), doc);
    if (!fresh) {
      next_[static_cast<size_t>(doc) * bands_ + band] = it->second;
      it->second = doc;
    }
  }
}

size_t NearDupIndex::memory_bytes() const {
  return sigs_.capacity() * 4 + next_.capacity() * 4 + heads_.size() * 32 + heads_.bucket_count() * 8;
}

const char* split_for(std::string_view id, const double f[3], uint64_t seed) {
  uint64_t h = XXH3_64bits_withSeed(id.data(), id.size(), seed);
  double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
  if (u < f[0]) return "train";
  if (u < f[0] + f[1]) return "validation";
  return "test";
}

}  // namespace dsft::data
