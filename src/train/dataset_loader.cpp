// DataLoader and collate: the per-epoch visiting order (a shuffle of our own, seeded by
// (seed, epoch), so the order is the same with every compiler and standard library), data mixing,
// exact seek for resume, and padding samples into batches.
#include <algorithm>
#include <cmath>
#include <limits>

#include "dsft/train/dataset.h"
#include "dsft/util/error.h"

namespace dsft::train {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// splitmix64 seeded from (seed, epoch, stream): independent streams per epoch and purpose.
class Rng {
 public:
  Rng(uint64_t seed, uint64_t epoch, uint64_t stream) {
    uint64_t s = seed;
    state_ = splitmix64(s);
    s = state_ ^ (epoch * 0xd1b54a32d192ed03ULL);
    state_ = splitmix64(s);
    s = state_ ^ (stream * 0x8cb92ba72f3d8dd7ULL);
    state_ = splitmix64(s);
  }
  uint64_t next() { return splitmix64(state_); }
  // Uniform in [0, n), without modulo bias.
  uint64_t below(uint64_t n) {
    const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

template <typename T>
void fisher_yates(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

std::vector<int64_t> permutation(int64_t n, Rng rng) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  fisher_yates(p, rng);
  return p;
}

enum Stream : uint64_t { kMain = 1, kMix = 2, kInterleave = 3 };

}  // namespace

Batch collate(const std::vector<const Sample*>& samples, int32_t pad_id) {
  Batch b;
  b.batch_size = static_cast<int64_t>(samples.size());
  for (const Sample* s : samples) {
    if (s->labels_mask.size() != s->ids.size() || s->segment_ids.size() != s->ids.size())
      throw Error("sample " + (s->record_ids.empty() ? std::string("?") : s->record_ids[0]) + " has " +
                  std::to_string(s->ids.size()) + " ids but " + std::to_string(s->labels_mask.size()) +
                  " mask entries and " + std::to_string(s->segment_ids.size()) + " segment ids");
    b.seq_len = std::max<int64_t>(b.seq_len, static_cast<int64_t>(s->ids.size()));
  }
  const size_t total = static_cast<size_t>(b.batch_size * b.seq_len);
  b.input_ids.assign(total, pad_id);
  b.labels_mask.assign(total, 0);
  b.segment_ids.assign(total, -1);
  b.position_ids.assign(total, 0);
  for (size_t r = 0; r < samples.size(); ++r) {
    const Sample& s = *samples[r];
    const size_t row = r * static_cast<size_t>(b.seq_len);
    int64_t pos = 0;
    for (size_t t = 0; t < s.ids.size(); ++t) {
      if (t > 0 && s.segment_ids[t] != s.segment_ids[t - 1]) pos = 0;  // a new record starts
      b.input_ids[row + t] = s.ids[t];
      b.labels_mask[row + t] = s.labels_mask[t];
      b.segment_ids[row + t] = s.segment_ids[t];
      b.position_ids[row + t] = pos++;
      b.target_tokens += s.labels_mask[t];
    }
  }
  return b;
}

DataLoader::DataLoader(const TokenizedDataset& data, int64_t batch_size, uint64_t seed, int32_t pad_id,
                       const TokenizedDataset* mix, double mix_ratio, bool shuffle)
    : data_(&data),
      mix_(mix),
      mix_ratio_(mix_ratio),
      batch_size_(batch_size),
      seed_(seed),
      pad_id_(pad_id),
      shuffle_(shuffle) {
  if (batch_size < 1) throw Error("batch size must be at least 1 (got " + std::to_string(batch_size) + ")");
  if (data.empty()) throw Error("the data loader has no samples to visit");
  if (!(mix_ratio >= 0.0 && mix_ratio < 1.0))
    throw Error("mix_ratio must be in [0, 1) (got " + std::to_string(mix_ratio) + ")");
  if (mix_ratio > 0.0 && shuffle) {
    if (!mix || mix->empty())
      throw Error("mix_ratio=" + std::to_string(mix_ratio) +
                  " needs a non-empty mix_dataset (hint: set mix_dataset)");
    // mix / (data + mix) = mix_ratio.
    const double n = static_cast<double>(data.size());
    mix_per_epoch_ = static_cast<int64_t>(std::llround(n * mix_ratio / (1.0 - mix_ratio)));
  }
  reshuffle();
}

void DataLoader::reshuffle() {
  const auto n = static_cast<int64_t>(data_->size());
  order_.clear();
  order_.reserve(static_cast<size_t>(n + mix_per_epoch_));
  if (!shuffle_) {
    for (int64_t i = 0; i < n; ++i) order_.emplace_back(false, i);
    return;
  }
  const auto e = static_cast<uint64_t>(epoch_);
  for (int64_t i : permutation(n, Rng(seed_, e, kMain))) order_.emplace_back(false, i);
  if (mix_per_epoch_ > 0) {
    // The mix samples form an endless stream of reshuffled passes over the mix dataset; epoch e
    // takes positions [e*M, (e+1)*M) of it, so a large general corpus is walked through rather
    // than its first M samples repeated, and any epoch can be computed on its own (seek).
    const auto m = static_cast<int64_t>(mix_->size());
    int64_t pass = -1;
    std::vector<int64_t> perm;
    for (int64_t p = epoch_ * mix_per_epoch_; p < (epoch_ + 1) * mix_per_epoch_; ++p) {
      if (p / m != pass) {
        pass = p / m;
        perm = permutation(m, Rng(seed_, static_cast<uint64_t>(pass), kMix));
      }
      order_.emplace_back(true, perm[static_cast<size_t>(p % m)]);
    }
    Rng rng(seed_, e, kInterleave);
    fisher_yates(order_, rng);
  }
}

Batch DataLoader::next() {
  if (index_ >= static_cast<int64_t>(order_.size())) {
    ++epoch_;
    index_ = 0;
    reshuffle();
  }
  const int64_t end = std::min<int64_t>(index_ + batch_size_, static_cast<int64_t>(order_.size()));
  std::vector<const Sample*> picked;
  picked.reserve(static_cast<size_t>(end - index_));
  for (int64_t i = index_; i < end; ++i) {
    const auto& [from_mix, k] = order_[static_cast<size_t>(i)];
    picked.push_back(&(from_mix ? mix_ : data_)->samples()[static_cast<size_t>(k)]);
  }
  index_ = end;
  return collate(picked, pad_id_);
}

int64_t DataLoader::batches_per_epoch() const {
  return (static_cast<int64_t>(order_.size()) + batch_size_ - 1) / batch_size_;
}

void DataLoader::seek(int64_t epoch, int64_t index) {
  if (epoch < 0 || index < 0 || index > static_cast<int64_t>(order_.size()))
    throw Error("cannot resume the data loader at epoch " + std::to_string(epoch) + ", sample " +
                std::to_string(index) + " (an epoch has " + std::to_string(order_.size()) +
                " samples; was the dataset changed since the checkpoint?)");
  epoch_ = epoch;
  index_ = index;
  reshuffle();
}

}  // namespace dsft::train
