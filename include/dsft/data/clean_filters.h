// The single-record filters of `dsft clean`, each a pure function (or a small class) so that it
// can be tested alone: UTF-8 repair, markup to text, Unicode normalisation, language detection,
// quality checks, MinHash signatures with an LSH index for near-duplicates, and the split.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dsft::data {

// ---- UTF-8 ----------------------------------------------------------------------------------

bool utf8_is_valid(std::string_view s);
// Replaces every maximal invalid subsequence by U+FFFD (or drops it when `drop`), as the Unicode
// standard recommends; `n_invalid` receives the number of invalid sequences.
std::string utf8_repair(std::string_view s, bool drop, size_t* n_invalid = nullptr);

// ---- markup ---------------------------------------------------------------------------------

// True when the text contains HTML/XML markup: a closing tag, a known HTML element, a comment or
// doctype, or a character entity. "a<b and c>d" and "vector<int>" are not markup.
bool looks_like_markup(std::string_view s);
// Text content of an HTML/XML document or fragment (gumbo): tags and entities removed,
// script/style/noscript/template dropped, block elements and <br> turned into line breaks,
// whitespace inside text collapsed as a browser would (except in <pre>/<textarea>).
std::string markup_to_text(std::string_view html);

// ---- Unicode --------------------------------------------------------------------------------

enum class NormalForm { none, nfc, nfkc };

struct UnicodeOptions {
  NormalForm form = NormalForm::nfc;
  bool remove_controls = true;      // C0/C1 controls except \n and \t; soft hyphen, ZWSP, BOM
  bool normalize_spaces = true;     // NBSP, U+2000-200A, U+3000 ... -> ' '; U+2028/2029/NEL -> '\n'
  bool collapse_spaces = true;      // runs of spaces -> one (indentation at line start is kept)
};

// \r\n and \r -> \n, then the options above; trailing spaces on a line and blank-line runs
// beyond one empty line are removed, and the whole text is trimmed.
std::string normalize_unicode(std::string_view s, const UnicodeOptions& options);

// ---- language -------------------------------------------------------------------------------

struct LanguageGuess {
  std::string code = "un";  // ISO 639-1 where one exists ("zh" for both scripts), "un" unknown
  int percent = 0;          // share of the text in `code`
  bool reliable = false;
  std::vector<std::pair<std::string, int>> top;  // up to three (code, percent)
};
LanguageGuess detect_language(std::string_view text);

// ---- quality --------------------------------------------------------------------------------

struct TextStats {
  size_t chars = 0;         // code points
  size_t non_space = 0;
  size_t symbols = 0;       // neither letter, digit nor space (punctuation, symbols)
  size_t digits = 0;
  size_t lines = 0;         // non-empty lines
  size_t repeated_lines = 0;  // non-empty lines equal to an earlier one
};
TextStats text_stats(std::string_view s);

// ---- near-duplicates ------------------------------------------------------------------------

// One-permutation MinHash with rotation densification over character k-shingles (code points,
// ASCII lower-cased, whitespace skipped), so Chinese text without spaces works as well as
// English. Deterministic: no random seeds beyond the fixed constants.
class MinHasher {
 public:
  MinHasher(int num_perm, int shingle_size);
  // Empty when the text has no characters.
  std::vector<uint32_t> signature(std::string_view text) const;
  int num_perm() const { return num_perm_; }

 private:
  int num_perm_, shingle_;
};

double signature_similarity(const uint32_t* a, const uint32_t* b, int num_perm);

// Bands and rows for an LSH index at this threshold (minimises false positives + negatives).
std::pair<int, int> lsh_bands_rows(double threshold, int num_perm);

// The kept documents' signatures, banded. query() returns the most similar earlier document at or
// above the threshold (its index in insertion order), or -1.
class NearDupIndex {
 public:
  NearDupIndex(int num_perm, double threshold);
  int64_t query(const std::vector<uint32_t>& sig, double* similarity = nullptr) const;
  void insert(const std::vector<uint32_t>& sig);  // index = number of earlier inserts
  size_t size() const { return n_; }
  size_t memory_bytes() const;

 private:
  uint64_t band_key(const uint32_t* sig, int band) const;
  int num_perm_, bands_, rows_;
  double threshold_;
  size_t n_ = 0;
  std::vector<uint32_t> sigs_;  // n_ * num_perm_
  std::unordered_map<uint64_t, uint32_t> heads_;  // band key -> latest doc in the bucket
  std::vector<uint32_t> next_;                    // [doc * bands_ + band] -> previous doc, or ~0
};

// ---- split ----------------------------------------------------------------------------------

// "train", "validation" or "test" from a hash of the id: the same id always lands in the same
// split, whatever the order or the other records. `fractions` has 3 entries summing to 1.
const char* split_for(std::string_view id, const double fractions[3], uint64_t seed);

}  // namespace dsft::data
