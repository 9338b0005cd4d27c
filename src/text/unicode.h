// UTF-8 and Unicode helpers for the tokenizers: validation, decoding, lossy conversion as Rust's
// String::from_utf8_lossy does it, normalization forms with the Unicode 9 behaviour of the Hugging
// Face library, and the Unicode 16 general categories Oniguruma uses for regex classes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dsft::text::unicode {

// Offset of the first byte that does not start a valid UTF-8 sequence, or npos when valid.
size_t find_invalid_utf8(std::string_view s);

// Decodes the code point at s[i] (s must be valid UTF-8) and advances i past it.
inline uint32_t next_cp(std::string_view s, size_t& i) {
  auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) { ++i; return b; }
  if (b < 0xE0) {
    uint32_t cp = ((b & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    i += 2;
    return cp;
  }
  if (b < 0xF0) {
    uint32_t cp = ((b & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                  (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    i += 3;
    return cp;
  }
  uint32_t cp = ((b & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
                ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) |
                (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
  i += 4;
  return cp;
}

// Length in bytes of the UTF-8 sequence that starts with byte b (1 for continuation bytes).
inline size_t utf8_len(unsigned char b) { return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

void append_utf8(std::string& out, uint32_t cp);

// Bytes to text the way Rust's String::from_utf8_lossy does: each maximal invalid subpart
// becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Unicode White_Space (what Oniguruma's \s and Rust's char::is_whitespace match).
bool is_white_space(uint32_t cp);

enum class NormForm { nfc, nfd, nfkc, nfkd };
// Normalizes valid UTF-8. Code points unassigned in Unicode 9.0 are left alone and block
// reordering and composition across them, as in the Rust library's normalizer (its tables are
// Unicode 9); everything else follows utf8proc, whose results agree with Unicode 9 for text
// assigned in 9.0 (Unicode's normalization stability policy).
std::string normalize(std::string_view s, NormForm form);

// True when `s` holds only code points that NFC leaves alone whatever surrounds them (so NFC(s)
// is s); false means "maybe not".
bool is_nfc_inert(std::string_view s);

// Rust's char::to_lowercase applied to every character (no final-sigma rule).
std::string lowercase(std::string_view s);

// Code points whose Unicode 16 general category (two letters, e.g. "Lo") differs from the
// Unicode 14 tables of PCRE2 10.42: they are added to \p{..} classes so that the regexes match
// what Oniguruma (Unicode 16) matches.
struct GcRange {
  uint32_t first, last;
  const char* gc;
};
const GcRange* gc_changed_begin();
const GcRange* gc_changed_end();

}  // namespace dsft::text::unicode

namespace dsft::text::unicode {
// General category (two letters) in Unicode 16: utf8proc's Unicode 15 data corrected by the
// generated 14-to-16 table.
const char* general_category16(uint32_t cp);
}  // namespace dsft::text::unicode
