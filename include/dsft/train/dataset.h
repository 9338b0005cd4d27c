// The training dataset: records (text | Alpaca | messages) -> chat template -> token ids with a
// per-token loss mask, truncation reported, optional packing of several records per sequence
// (with segment ids so attention never crosses a record boundary), a token cache keyed by data,
// tokenizer, template and length, data mixing, a deterministic validation split, and batching.
// Torch-free: batches are plain vectors; the trainer turns them into tensors.
//
// The trainer's flow: build (per-record samples, packed too when options.packing) -> split
// (per record, then each part packed again the same way) -> a DataLoader over each part.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dsft::text {
class Tokenizer;
class ChatTemplate;
}  // namespace dsft::text

namespace dsft::train {

// One tokenised record (or, when packed, several records laid end to end).
struct Sample {
  std::vector<int32_t> ids;
  // 1 where the token at this position is a target (predicted from the positions before it),
  // 0 for prompt tokens and for the first token of every record. The trainer's loss at position t
  // compares logits[t-1] with ids[t] where labels_mask[t] == 1.
  std::vector<uint8_t> labels_mask;
  // Which record each position belongs to (0, 1, 2, ... within the sample); a packed sample's
  // attention is block-diagonal over these, and position ids restart at 0 for each record.
  std::vector<int32_t> segment_ids;
  std::vector<std::string> record_ids;  // the "id" of every record in the sample
};

struct DatasetOptions {
  int64_t max_seq_length = 2048;
  bool packing = false;
  bool train_on_inputs = false;  // true: every token but the first of each record is a target
  // Prepend BOS to each record where the tokenizer asks for it (add_bos_for_training) and the
  // template or text does not already start with it.
  bool add_bos = true;
  // Append EOS to plain-text records (continued pre-training), as is usual.
  bool add_eos_to_text = true;
  std::string cache_dir;  // "" disables the token cache
  // The tokenizer's directory: the bytes of its tokenizer.json / tokenizer.model /
  // tokenizer_config.json join the cache key. Without it the key still covers the vocabulary,
  // the special ids and sample encodings taken from the Tokenizer object.
  std::string tokenizer_dir;
  int num_threads = 0;  // records are tokenised on this many threads; 0 = every core
};

struct DatasetStats {
  int64_t records = 0;  // records in the samples (dropped ones not counted)
  int64_t samples = 0;
  int64_t tokens = 0;            // total ids over all samples
  int64_t target_tokens = 0;     // labels_mask == 1
  int64_t truncated = 0;         // records cut to max_seq_length (reported, never silent)
  int64_t truncated_tokens = 0;  // ids cut off those records
  int64_t dropped_empty = 0;     // records with no target token after truncation (reported)
  bool from_cache = false;
  std::string cache_file;  // the cache file read or written ("" without a cache)
};

// Tokenises every record of the JSONL files (in order) with `tokenizer` and `chat_template`
// (text records bypass the template). A malformed line is a dsft::Error naming file and line.
class TokenizedDataset {
 public:
  static TokenizedDataset build(const std::vector<std::string>& jsonl_files, const text::Tokenizer& tokenizer,
                                const text::ChatTemplate& chat_template, const DatasetOptions& options);

  // What a DataLoader visits: the packed samples when packed, else one sample per record.
  const std::vector<Sample>& samples() const { return packed_ ? packed_samples_ : records_; }
  const DatasetStats& stats() const { return stats_; }
  size_t size() const { return samples().size(); }
  bool empty() const { return samples().empty(); }

  // One sample per record, in file order (segment ids all 0), whether or not packed.
  const std::vector<Sample>& records() const { return records_; }
  bool packed() const { return packed_; }
  int64_t max_seq_length() const { return max_seq_length_; }
  // The ids of the records dropped for having no target token.
  const std::vector<std::string>& dropped_ids() const { return dropped_ids_; }

  // Splits off a validation set: every record whose hash(id, seed) falls below `fraction` goes to
  // the second dataset (deterministic, independent of file order). Applied before packing: a
  // packed dataset's parts are each packed again. A fraction outside [0, 1) is a dsft::Error.
  std::pair<TokenizedDataset, TokenizedDataset> split(double fraction, uint64_t seed) const;

  // The same records packed into samples of at most `max_seq_length` ids (best-fit decreasing by
  // length, ties in file order: deterministic). Records are never split across samples.
  TokenizedDataset pack(int64_t max_seq_length) const;
  TokenizedDataset pack() const { return pack(max_seq_length_); }

 private:
  friend struct DatasetInternals;
  void recompute_stats();
  void pack_samples(int64_t max_seq_length);  // fills packed_samples_ from records_

  std::vector<Sample> records_;
  std::vector<uint8_t> record_truncated_;   // per record: was it cut to max_seq_length
  std::vector<int64_t> record_cut_tokens_;  // per record: how many ids were cut
  std::vector<std::string> dropped_ids_;
  std::vector<Sample> packed_samples_;
  bool packed_ = false;
  int64_t max_seq_length_ = 0;
  DatasetStats stats_;
};

// A batch of B samples padded to the longest (right padding with pad_id, mask 0, segment -1).
struct Batch {
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  std::vector<int64_t> input_ids;     // [B * T]
  std::vector<uint8_t> labels_mask;   // [B * T]
  std::vector<int32_t> segment_ids;   // [B * T], -1 on padding
  std::vector<int64_t> position_ids;  // [B * T], restarting at 0 per record
  int64_t target_tokens = 0;
};

// Pads `samples` into one batch (what DataLoader::next returns), e.g. for evaluation.
Batch collate(const std::vector<const Sample*>& samples, int32_t pad_id);

// The order samples are visited in: a deterministic shuffle per epoch (seed + epoch), with
// `mix` samples interleaved at `mix_ratio` of the stream when given. Its position is plain data
// (epoch, index) so a checkpoint can restore it exactly. The last batch of an epoch may be
// smaller than batch_size (no sample is skipped). With shuffle = false (evaluation) samples come
// in dataset order and nothing is mixed in.
class DataLoader {
 public:
  DataLoader(const TokenizedDataset& data, int64_t batch_size, uint64_t seed, int32_t pad_id,
             const TokenizedDataset* mix = nullptr, double mix_ratio = 0.0, bool shuffle = true);

  Batch next();  // wraps to the next epoch at the end
  int64_t batches_per_epoch() const;
  int64_t samples_per_epoch() const { return static_cast<int64_t>(order_.size()); }
  int64_t mix_samples_per_epoch() const { return mix_per_epoch_; }
  int64_t epoch() const { return epoch_; }
  int64_t index() const { return index_; }  // samples of this epoch already returned
  void seek(int64_t epoch, int64_t index);  // restores a saved position exactly

 private:
  void reshuffle();
  const TokenizedDataset* data_;
  const TokenizedDataset* mix_;
  double mix_ratio_;
  int64_t batch_size_;
  uint64_t seed_;
  int32_t pad_id_;
  bool shuffle_;
  int64_t mix_per_epoch_ = 0;
  int64_t epoch_ = 0;
  int64_t index_ = 0;                            // next slot within the epoch's order
  std::vector<std::pair<bool, int64_t>> order_;  // (from mix?, sample index)
};

}  // namespace dsft::train
