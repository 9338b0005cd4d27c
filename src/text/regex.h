// Oniguruma-compatible regular expressions on PCRE2 (UTF + UCP + JIT): the Split pre-tokenizer
// and Replace normalizer patterns of tokenizer.json are written for Oniguruma, which the Hugging
// Face library runs with Unicode 16 tables.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsft::text {

// Rewrites an Oniguruma (Ruby syntax) pattern into PCRE2 syntax with the same meaning:
// \s is Unicode White_Space (PCRE2's also has U+180E), \h is a hex digit, \v is U+000B,
// \p{..} general categories gain the code points Unicode 15 and 16 assigned, (?m) is dot-all.
// Throws dsft::Error for constructs that cannot be expressed (`origin` names the file).
std::string onig_to_pcre2(std::string_view pattern, const std::string& origin);

class Regex {
 public:
  // `pattern` is Oniguruma syntax; `origin` names where it came from, for error messages.
  Regex(std::string_view pattern, const std::string& origin);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every match as [start, end) byte offsets, as the Rust library's onig find_iter yields them:
  // left to right, non-overlapping; an empty match right after the previous one is skipped.
  // `subject` must be valid UTF-8. Thread-safe.
  void find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  bool match_at(std::string_view subject, size_t start, size_t& ms, size_t& me) const;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;
};

}  // namespace dsft::text
