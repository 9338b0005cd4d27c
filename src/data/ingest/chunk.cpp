// Splitting long documents into overlapping chunks at natural boundaries (see chunk_text in
// include/dsft/data/ingest_text.h). Positions are code points; cuts are searched from the
// strongest boundary (a blank line) down to the weakest (between two CJK characters).
#include <algorithm>

#include "dsft/data/ingest_text.h"

namespace dsft::data {

namespace {

void decode(std::string_view s, std::vector<char32_t>& cps, std::vector<size_t>& offs) {
  cps.clear();
  offs.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    offs.push_back(i);
    unsigned char c = p[i];
    char32_t cp;
    size_t len;
    if (c < 0x80) {
      cp = c;
      len = 1;
    } else if ((c >> 5) == 0x6 && i + 1 < n) {
      cp = ((c & 0x1F) << 6) | (p[i + 1] & 0x3F);
      len = 2;
    } else if ((c >> 4) == 0xE && i + 2 < n) {
      cp = ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
      len = 3;
    } else if ((c >> 3) == 0x1E && i + 3 < n) {
      cp = ((c & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
      len = 4;
    } else {
      cp = 0xFFFD;
      len = 1;
    }
    cps.push_back(cp);
    i += len;
  }
  offs.push_back(n);
}

bool is_space(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0xA0 || c == 0x3000 || c == '\f' ||
         c == '\v';
}

// Scripts written without spaces between words, where a cut between two characters is not a
// cut inside a word.
bool is_cjk(char32_t c) {
  return (c >= 0x3000 && c <= 0x30FF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFF00 && c <= 0xFFEF) || (c >= 0x20000 && c <= 0x3FFFF);
}
bool is_cjk_sentence_end(char32_t c) {
  return c == 0x3002 || c == 0xFF01 || c == 0xFF1F || c == 0x2026 || c == 0xFF0E;
}
bool is_latin_sentence_end(char32_t c) {
  return c == '.' || c == '!' || c == '?';
}
bool is_closer(char32_t c) {
  return c == '"' || c == '\'' || c == ')' || c == 0x201D || c == 0x2019 || c == 0xFF09 || c == 0x300D ||
         c == 0x300F;
}
bool is_clause_mark(char32_t c) {
  return c == ',' || c == ';' || c == ':' || c == 0xFF0C || c == 0x3001 || c == 0xFF1B || c == 0xFF1A;
}

struct Text {
  std::vector<char32_t> cp;
  size_t size() const { return cp.size(); }
  char32_t at(size_t i) const { return i < cp.size() ? cp[i] : U' '; }  // past the end reads as space

  // Cut strengths at position c (between cp[c-1] and cp[c]); 0 = not a boundary.
  int strength(size_t c) const {
    if (c == 0 || c >= size()) return 7;
    char32_t a = cp[c - 1], b = cp[c];
    if (a == '\n' && c >= 2 && cp[c - 2] == '\n' && !is_space(b)) return 6;  // after a blank line
    if (a == '\n' && !is_space(b)) return 5;                                 // start of a line
    size_t e = c - 1;
    while (e > 0 && is_closer(cp[e])) --e;  // look through closing quotes/brackets
    if (is_cjk_sentence_end(cp[e]) && !is_closer(b) && !is_cjk_sentence_end(b)) return 4;
    if (is_latin_sentence_end(cp[e]) && is_space(b)) return 4;
    if (is_space(a) && !is_space(b)) {
      size_t k = c - 1;
      while (k > 0 && is_space(cp[k])) --k;
      if (is_latin_sentence_end(cp[k]) || is_cjk_sentence_end(cp[k])) return 4;
      if (is_clause_mark(cp[k])) return 3;
      return 2;
    }
    if (is_clause_mark(a) && is_cjk(a) && !is_clause_mark(b) && !is_cjk_sentence_end(b)) return 3;
    if (is_cjk(a) && is_cjk(b) && !is_clause_mark(b) && !is_cjk_sentence_end(b) && !is_closer(b)) return 1;
    if ((is_cjk(a) && !is_space(b) && !is_cjk(b)) || (is_cjk(b) && !is_space(a) && !is_cjk(a))) return 1;
    return 0;
  }
};

}  // namespace

std::vector<std::string> chunk_text(std::string_view text, size_t chunk_size, size_t overlap) {
  std::vector<std::string> out;
  if (chunk_size == 0) chunk_size = 1;
  if (overlap >= chunk_size) overlap = chunk_size / 2;
  Text t;
  std::vector<size_t> offs;
  decode(text, t.cp, offs);
  const size_t n = t.size();
  auto emit = [&](size_t a, size_t b) {
    while (a < b && is_space(t.cp[a])) ++a;
    while (b > a && is_space(t.cp[b - 1])) --b;
    if (a < b) out.emplace_back(text.substr(offs[a], offs[b] - offs[a]));
  };
  size_t start = 0;
  while (start < n && is_space(t.cp[start])) ++start;
  while (start < n) {
    if (n - start <= chunk_size) {
      emit(start, n);
      break;
    }
    const size_t limit = start + chunk_size;
    // The best cut in the second half of the window: strongest boundary, then the latest.
    size_t cut = 0;
    int best = 0;
    for (size_t c = limit; c > start + chunk_size / 2; --c) {
      int s = t.strength(c);
      if (s > best) {
        best = s;
        cut = c;
        if (s >= 6) break;
      }
    }
    if (best == 0) {  // no boundary in the second half: any boundary in the window
      for (size_t c = limit; c > start; --c)
        if (t.strength(c) > 0) {
          cut = c;
          break;
        }
    }
    if (cut == 0) {  // one word longer than the chunk: keep it whole
      cut = limit;
      while (cut < n && t.strength(cut) == 0) ++cut;
    }
    emit(start, cut);
    if (cut >= n) break;
    // The next chunk starts about `overlap` characters back, at the strongest boundary there
    // (the earliest one of that strength, to keep the overlap as long as allowed).
    size_t next = cut;
    if (overlap > 0) {
      size_t lo = cut > overlap ? cut - overlap : 0;
      if (lo <= start) lo = start + 1;
      int best_s = 0;
      for (size_t c = lo; c < cut; ++c) {
        int s = t.strength(c);
        if (s > best_s && !is_space(t.cp[c])) {
          best_s = s;
          next = c;
        }
      }
    }
    while (next < n && is_space(t.cp[next])) ++next;
    start = next;
  }
  return out;
}

}  // namespace dsft::data
