// Answer scoring: normalisation (NFKC + case folding through utf8proc, punctuation removed,
// whitespace collapsed), exact / normalised / contains matching and ROUGE-L F1 over tokens where
// each CJK character stands alone.
#include "dsft/eval/text_metrics.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "dsft/util/strings.h"

namespace dsft::eval {
namespace {

// Decodes UTF-8, replacing each invalid byte with U+FFFD so that scoring never fails on a
// model's broken output.
std::vector<int32_t> decode(std::string_view s) {
  std::vector<int32_t> cps;
  cps.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                          static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    if (n <= 0) {
      cps.push_back(0xFFFD);
      ++i;
    } else {
      cps.push_back(cp);
      i += static_cast<size_t>(n);
    }
  }
  return cps;
}

void append_utf8(std::string& out, int32_t cp) {
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// NFKC with case folding: full-width letters, digits and punctuation become their ASCII forms,
// ligatures and circled digits decompose, and "Ａ", "A" and "a" compare equal.
std::vector<int32_t> fold(std::string_view text) {
  std::vector<int32_t> cps = decode(text);
  if (cps.empty()) return cps;
  std::string valid;
  valid.reserve(text.size());
  for (int32_t cp : cps) append_utf8(valid, cp);
  auto opts = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT |
                                             UTF8PROC_CASEFOLD);
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid.data()),
                                    static_cast<utf8proc_ssize_t>(valid.size()), &out, opts);
  if (n < 0) return cps;  // cannot happen on the repaired input; unnormalised beats failing
  std::vector<int32_t> folded =
      decode(std::string_view(reinterpret_cast<const char*>(out), static_cast<size_t>(n)));
  std::free(out);
  return folded;
}

bool is_punct(int32_t cp) {
  if (cp < 0x80) {
    // Every ASCII punctuation and symbol character (Python's string.punctuation), as answer
    // normalisation in SQuAD-style scoring does: "$5" and "5" compare equal.
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
           (cp >= 0x7B && cp <= 0x7E);
  }
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

bool is_space(int32_t cp) {
  if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return true;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
      return true;
    default:
      return cp == 0x85;
  }
}

// Characters that carry no content: other controls, format characters (zero-width space, BOM).
bool is_ignorable(int32_t cp) {
  auto c = utf8proc_category(cp);
  return c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF;
}

// CJK ideographs, kana and hangul syllables: scripts written without spaces, where one character
// is the unit ROUGE compares.
bool is_cjk(int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x3FFFF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x31F0 && cp <= 0x31FF) || (cp >= 0xAC00 && cp <= 0xD7AF) ||
         (cp >= 0x3005 && cp <= 0x3007);
}

bool is_word_char(int32_t cp) {
  if (is_cjk(cp)) return false;
  auto c = utf8proc_category(cp);
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
         (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_ME) ||
         (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

std::vector<int32_t> normalize_cps(std::string_view text) {
  std::vector<int32_t> out;
  bool pending_space = false;
  for (int32_t cp : fold(text)) {
    if (is_space(cp)) {
      pending_space = !out.empty();
      continue;
    }
    if (is_punct(cp) || is_ignorable(cp)) continue;
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(cp);
  }
  return out;
}

std::string encode(const std::vector<int32_t>& cps, size_t begin, size_t end) {
  std::string s;
  s.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) append_utf8(s, cps[i]);
  return s;
}

// Whether `needle` occurs in `hay` at a place where it does not cut a word in two: "4" is not in
// "14 apples", but is in "答案是4" (CJK characters are words of their own).
bool contains_at_boundary(const std::vector<int32_t>& hay, const std::vector<int32_t>& needle) {
  if (needle.empty()) return hay.empty();
  if (needle.size() > hay.size()) return false;
  bool need_left = is_word_char(needle.front());
  bool need_right = is_word_char(needle.back());
  auto it = hay.begin();
  while (true) {
    it = std::search(it, hay.end(), needle.begin(), needle.end());
    if (it == hay.end()) return false;
    size_t pos = static_cast<size_t>(it - hay.begin());
    size_t end = pos + needle.size();
    bool left_ok = !need_left || pos == 0 || !is_word_char(hay[pos - 1]);
    bool right_ok = !need_right || end == hay.size() || !is_word_char(hay[end]);
    if (left_ok && right_ok) return true;
    ++it;
  }
}

size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  if (a.empty() || b.empty()) return 0;
  const std::vector<std::string>& outer = a.size() >= b.size() ? a : b;
  const std::vector<std::string>& inner = a.size() >= b.size() ? b : a;
  std::vector<size_t> prev(inner.size() + 1, 0), cur(inner.size() + 1, 0);
  for (const auto& x : outer) {
    for (size_t j = 1; j <= inner.size(); ++j)
      cur[j] = x == inner[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[inner.size()];
}

}  // namespace

std::string normalize_answer(std::string_view text) {
  std::vector<int32_t> cps = normalize_cps(text);
  return encode(cps, 0, cps.size());
}

std::vector<std::string> rouge_tokens(std::string_view text) {
  std::vector<std::string> tokens;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) tokens.push_back(std::move(word));
    word.clear();
  };
  for (int32_t cp : fold(text)) {
    if (is_cjk(cp)) {
      flush();
      std::string t;
      append_utf8(t, cp);
      tokens.push_back(std::move(t));
    } else if (is_word_char(cp)) {
      append_utf8(word, cp);
    } else if (!is_ignorable(cp)) {
      flush();  // spaces, punctuation and symbols separate words
    }
  }
  flush();
  return tokens;
}

AnswerScores score_answer(std::string_view prediction, std::string_view reference) {
  AnswerScores s;
  s.exact = util::trim(prediction) == util::trim(reference);
  std::vector<int32_t> np = normalize_cps(prediction);
  std::vector<int32_t> nr = normalize_cps(reference);
  s.normalized = np == nr;
  s.contains = contains_at_boundary(np, nr);
  std::vector<std::string> tp = rouge_tokens(prediction);
  std::vector<std::string> tr = rouge_tokens(reference);
  if (tp.empty() && tr.empty()) {
    s.rouge_l = 1.0;  // nothing to say and nothing said: identical
  } else {
    double lcs = static_cast<double>(lcs_length(tp, tr));
    if (lcs > 0) {
      double p = lcs / static_cast<double>(tp.size());
      double r = lcs / static_cast<double>(tr.size());
      s.rouge_l = 2 * p * r / (p + r);
    }
  }
  return s;
}

}  // namespace dsft::eval
