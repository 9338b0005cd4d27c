// tokenizer.json loading and the encode/decode pipeline of the Rust `tokenizers` library
// (AddedVocabulary::extract_and_normalize, then pre-tokenization and the model per piece).
#include "text/hf_tokenizer.h"

#include <algorithm>

#include "text/unicode.h"

namespace dsft::text::hf {
namespace {

// Rust regex \w: letters, marks, decimal digits, connector punctuation (and the joiners).
bool is_word_char(uint32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  if (cp == 0x200C || cp == 0x200D) return true;
  const char* gc = unicode::general_category16(cp);
  return gc[0] == 'L' || gc[0] == 'M' || (gc[0] == 'N' && (gc[1] == 'd' || gc[1] == 'l')) || (gc[0] == 'P' && gc[1] == 'c');
}

uint32_t last_cp(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return unicode::next_cp(s, i);
}

}  // namespace

void TokenMatcher::add(std::string_view s, int32_t token_index) {
  if (s.empty()) return;
  int32_t node = 0;
  for (unsigned char c : s) {
    int32_t next = -1;
    for (auto& [k, child] : nodes_[static_cast<size_t>(node)].kids) {
      if (k == c) { next = child; break; }
    }
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_[static_cast<size_t>(node)].kids.emplace_back(c, next);
      nodes_.emplace_back();
    }
    node = next;
  }
  // A content listed twice keeps the first token, as the automaton reports the first pattern.
  if (nodes_[static_cast<size_t>(node)].token < 0) nodes_[static_cast<size_t>(node)].token = token_index;
  first_[static_cast<unsigned char>(s[0])] = true;
}

bool TokenMatcher::find(std::string_view text, size_t from, size_t& start, size_t& end, int32_t& token) const {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (!first_[p[pos]]) continue;
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      int32_t next = -1;
      for (const auto& [k, child] : nodes_[static_cast<size_t>(node)].kids) {
        if (k == p[i]) { next = child; break; }
      }
      if (next < 0) break;
      node = next;
      if (nodes_[static_cast<size_t>(node)].token >= 0) {
        best = nodes_[static_cast<size_t>(node)].token;
        best_end = i + 1;
      }
    }
    if (best >= 0) {
      start = pos;
      end = best_end;
      token = best;
      return true;
    }
  }
  return false;
}

HfTokenizer::HfTokenizer(std::string_view json_text, const std::string& origin) : origin_(origin) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json_text);
  simdjson::dom::element root;
  if (auto err = parser.parse(padded).get(root))
    throw Error(origin + " is not valid JSON: " + simdjson::error_message(err) +
                "; hint: the file may be truncated, download it again");
  if (!root.is_object()) throw Error(origin + ": expected a JSON object at the top level");

  model_ = std::make_unique<BpeModel>(json::require(root, "model", origin, "tokenizer.json"), origin);
  auto null_or = [&](const char* key, auto make) -> decltype(make(root, origin)) {
    auto r = root[key];
    if (r.error() || r.value_unsafe().is_null()) return nullptr;
    return make(r.value_unsafe(), origin);
  };
  normalizer_ = null_or("normalizer", make_normalizer);
  pre_tokenizer_ = null_or("pre_tokenizer", make_pre_tokenizer);
  post_processor_ = null_or("post_processor", make_post_processor);
  decoder_ = null_or("decoder", make_decoder);

  // A ByteLevel stage at the end of pre-tokenization leaves byte mapping to the model, which
  // then works on raw bytes (no mapped strings are built).
  ByteLevelPreTokenizer* last_bl = dynamic_cast<ByteLevelPreTokenizer*>(pre_tokenizer_.get());
  if (auto* seq = dynamic_cast<SequencePreTokenizer*>(pre_tokenizer_.get()); seq && !seq->stages.empty())
    last_bl = dynamic_cast<ByteLevelPreTokenizer*>(seq->stages.back().get());
  if (last_bl && model_->enable_raw_bytes()) {
    last_bl->map_bytes = false;
    raw_bytes_ = true;
  }

  int32_t max_id = model_->max_id();
  if (auto at = json::field(root, "added_tokens")) {
    simdjson::dom::array arr;
    if (at->get_array().get(arr)) throw Error(origin + ": added_tokens must be an array");
    for (auto e : arr) {
      AddedToken t;
      t.id = static_cast<int32_t>(json::get_int(json::require(e, "id", origin, "added token"), origin, "added_tokens[].id"));
      t.content = json::get_string(e, "content", origin, "added token");
      t.special = json::get_bool(e, "special", false, origin, "added token");
      t.lstrip = json::get_bool(e, "lstrip", false, origin, "added token");
      t.rstrip = json::get_bool(e, "rstrip", false, origin, "added token");
      t.single_word = json::get_bool(e, "single_word", false, origin, "added token");
      t.normalized = json::get_bool(e, "normalized", !t.special, origin, "added token");
      if (t.id < 0) throw Error(origin + ": added token \"" + t.content + "\" has negative id " + std::to_string(t.id));
      max_id = std::max(max_id, t.id);
      added_by_id_[t.id] = added_.size();
      added_by_content_.set(t.content, t.id);
      added_.push_back(std::move(t));
    }
  }
  for (size_t i = 0; i < added_.size(); ++i) {
    AddedToken& t = added_[i];
    t.id_content = t.content;
    if (!t.normalized || !normalizer_) {
      // Without a normalizer the normalized form is the content itself; the Rust library puts
      // such tokens in the second matcher, which then sees the same text.
      (t.normalized ? normalized_matcher_ : raw_matcher_).add(t.content, static_cast<int32_t>(i));
    } else {
      std::string n = t.content;
      normalizer_->normalize(n);
      normalized_matcher_.add(n, static_cast<int32_t>(i));
      t.id_content = n;
    }
  }
  vocab_size_ = max_id + 1;
}

void HfTokenizer::split_added(std::string_view s, const TokenMatcher& m, std::vector<std::pair<size_t, size_t>>& spans,
                              std::vector<int32_t>& span_token) const {
  // Rust: AddedVocabulary::find_matches, with lstrip/rstrip/single_word.
  spans.clear();
  span_token.clear();
  size_t start_offset = 0, from = 0, a, b;
  int32_t tok;
  while (from < s.size() && m.find(s, from, a, b, tok)) {
    from = b;
    const AddedToken& t = added_[static_cast<size_t>(tok)];
    if (t.single_word) {
      bool start_space = a == 0 || !is_word_char(last_cp(s.substr(0, a)));
      size_t j = b;
      bool stop_space = b == s.size() || !is_word_char(unicode::next_cp(s, j));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t ns = a;
      while (ns > 0) {
        size_t k = ns - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t kk = k;
        if (!unicode::is_white_space(unicode::next_cp(s, kk))) break;
        ns = k;
      }
      a = std::max(ns, start_offset);
    }
    if (t.rstrip) {
      while (b < s.size()) {
        size_t k = b;
        if (!unicode::is_white_space(unicode::next_cp(s, k))) break;
        b = k;
      }
      from = b;
    }
    if (start_offset < a) {
      spans.emplace_back(start_offset, a);
      span_token.push_back(-1);
    }
    spans.emplace_back(a, b);
    span_token.push_back(t.id);
    start_offset = b;
  }
  if (start_offset < s.size()) {
    spans.emplace_back(start_offset, s.size());
    span_token.push_back(-1);
  }
}

void HfTokenizer::encode_pieces(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  if (!pre_tokenizer_) {
    model_->tokenize(text, false, out);
    return;
  }
  thread_local Pieces p;
  p.list.clear();
  p.list.push_back(text);
  pre_tokenizer_->apply(p, at_start);
  for (std::string_view piece : p.list) model_->tokenize(piece, raw_bytes_, out);
  p.arena.clear();
}

void HfTokenizer::encode_normalized_segment(std::string_view seg, bool at_start, std::vector<int32_t>& out) const {
  std::string norm;
  std::string_view view = seg;
  if (normalizer_) {
    norm.assign(seg);
    normalizer_->normalize(norm);
    view = norm;
  }
  if (normalized_matcher_.empty()) {
    encode_pieces(view, at_start, out);
    return;
  }
  std::vector<std::pair<size_t, size_t>> spans;
  std::vector<int32_t> toks;
  split_added(view, normalized_matcher_, spans, toks);
  for (size_t i = 0; i < spans.size(); ++i) {
    if (toks[i] >= 0) out.push_back(toks[i]);
    else encode_pieces(view.substr(spans[i].first, spans[i].second - spans[i].first), at_start && spans[i].first == 0, out);
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  size_t bad = unicode::find_invalid_utf8(text);
  if (bad != std::string_view::npos)
    throw Error("text to tokenize is not valid UTF-8 (byte " + std::to_string(bad) + " of " + std::to_string(text.size()) + ")");
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (raw_matcher_.empty()) {
    encode_normalized_segment(text, true, out);
  } else {
    std::vector<std::pair<size_t, size_t>> spans;
    std::vector<int32_t> toks;
    split_added(text, raw_matcher_, spans, toks);
    for (size_t i = 0; i < spans.size(); ++i) {
      if (toks[i] >= 0) out.push_back(toks[i]);
      else encode_normalized_segment(text.substr(spans[i].first, spans[i].second - spans[i].first), spans[i].first == 0, out);
    }
  }
  if (add_special_tokens && post_processor_) post_processor_->process(out);
  return out;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) {
      const AddedToken& t = added_[it->second];
      if (skip_special_tokens && t.special) continue;
      tokens.push_back(t.id_content);
      continue;
    }
    const std::string* tok = model_->id_to_token(id);
    if (!tok)
      throw Error("cannot decode token id " + std::to_string(id) + ": not in the vocabulary of " + origin_ +
                  " (size " + std::to_string(vocab_size_) + ")");
    tokens.push_back(*tok);
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  int32_t id = added_by_content_.get(token);
  if (id < 0) id = model_->token_to_id(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::string HfTokenizer::id_to_token(int32_t id) const {
  auto it = added_by_id_.find(id);
  if (it != added_by_id_.end()) return added_[it->second].id_content;
  const std::string* tok = model_->id_to_token(id);
  if (!tok) throw Error("token id " + std::to_string(id) + " is not in the vocabulary of " + origin_);
  return *tok;
}

bool HfTokenizer::is_special(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && added_[it->second].special;
}

bool HfTokenizer::post_processor_prepends(int32_t id) const {
  if (!post_processor_) return false;
  std::vector<int32_t> ids;
  post_processor_->process(ids);
  return !ids.empty() && ids.front() == id;
}

}  // namespace dsft::text::hf
