// The Hugging Face tokenizer.json pipeline behind dsft::text::Tokenizer: added tokens matched in
// the raw text, normalizer, pre-tokenizer, BPE model, post-processor, decoder.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>

#include "dsft/text/tokenizer.h"
#include "text/hf_components.h"

namespace dsft::text::hf {

struct AddedToken {
  std::string content;
  // What id_to_token and decode give: the content after the normalizer for a normalized token,
  // as the Rust library's id -> token map holds it.
  std::string id_content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
};

// Leftmost-longest literal matching over a byte trie (what the Rust library's Aho-Corasick
// automaton with MatchKind::LeftmostLongest finds).
class TokenMatcher {
 public:
  void add(std::string_view s, int32_t token_index);
  bool empty() const { return nodes_.size() <= 1; }
  // First match starting at or after `from`: [start, end) and the token index.
  bool find(std::string_view text, size_t from, size_t& start, size_t& end, int32_t& token) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> kids;
    int32_t token = -1;
  };
  std::vector<Node> nodes_{1};
  bool first_[256] = {};
};

class HfTokenizer : public Tokenizer {
 public:
  // Parses a tokenizer.json; `origin` (its path) names it in error messages.
  HfTokenizer(std::string_view json_text, const std::string& origin);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override;
  // Whether add_special_tokens puts `id` first (a BOS-adding template).
  bool post_processor_prepends(int32_t id) const;

 private:
  void encode_normalized_segment(std::string_view seg, bool at_start, std::vector<int32_t>& out) const;
  void encode_pieces(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
  void split_added(std::string_view text, const TokenMatcher& m, std::vector<std::pair<size_t, size_t>>& spans,
                   std::vector<int32_t>& span_token) const;

  std::string origin_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  bool raw_bytes_ = false;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;
  StringIdMap added_by_content_;
  TokenMatcher raw_matcher_, normalized_matcher_;
  int32_t vocab_size_ = 0;
};

}  // namespace dsft::text::hf
