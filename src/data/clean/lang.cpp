// Language detection with CLD2: the top language, its share, CLD2's reliability flag and the
// top three, with codes folded to ISO 639-1 ("zh-Hant" -> "zh").
#include <cstdio>  // cld2 uses FILE without including it

#include <cld2/public/compact_lang_det.h>

#include <climits>
#include <string>

#include "dsft/data/clean_filters.h"

namespace dsft::data {
namespace {

std::string fold_code(CLD2::Language lang) {
  if (lang == CLD2::UNKNOWN_LANGUAGE || lang == CLD2::TG_UNKNOWN_LANGUAGE) return "un";
  std::string code = CLD2::LanguageCode(lang);
  size_t dash = code.find('-');
  if (dash != std::string::npos) code.resize(dash);
  return code;
}

}  // namespace

LanguageGuess detect_language(std::string_view text) {
  LanguageGuess g;
  if (text.empty()) return g;
  // CLD2 looks at the text in 4 KB chunks anyway; 64 KB is plenty to decide.
  int len = static_cast<int>(std::min<size_t>(text.size(), 1 << 16));
  // Do not cut a UTF-8 sequence in half.
  while (len > 0 && len < static_cast<int>(text.size()) && (static_cast<unsigned char>(text[len]) & 0xC0) == 0x80) --len;
  CLD2::Language lang3[3];
  int percent3[3];
  int text_bytes = 0;
  bool reliable = false;
  CLD2::Language top = CLD2::DetectLanguageSummary(text.data(), len, true, lang3, percent3, &text_bytes, &reliable);
  g.reliable = reliable;
  for (int i = 0; i < 3; ++i) {
    if (lang3[i] == CLD2::UNKNOWN_LANGUAGE || percent3[i] <= 0) continue;
    std::string c = fold_code(lang3[i]);
    bool merged = false;
    for (auto& [code, pct] : g.top) {
      if (code == c) {
        pct += percent3[i];
        merged = true;
      }
    }
    if (!merged) g.top.emplace_back(c, percent3[i]);
  }
  g.code = fold_code(top);
  for (const auto& [code, pct] : g.top)
    if (code == g.code) g.percent = pct;
  return g;
}

}  // namespace dsft::data
