// Scoring a generated answer against a reference: exact match, normalised match (case,
// whitespace, punctuation, full-/half-width forms), contains, and ROUGE-L F1 over tokens where
// every CJK character is a token of its own (so Chinese is scored character by character) and
// runs of other letters/digits are words. Torch-free.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace dsft::eval {

// NFKC (full-width -> half-width), case folded, punctuation removed (every ASCII punctuation or
// symbol character and every Unicode punctuation character, e.g. CJK "，。、「」"), control and
// format characters dropped, whitespace runs collapsed to one space and trimmed. Invalid UTF-8
// bytes become U+FFFD rather than an error: model output is scored as it is.
// normalize_answer("  Ｈｅｌｌｏ，  World！") == "hello world".
std::string normalize_answer(std::string_view text);

// The tokens ROUGE-L compares: each CJK ideograph / kana / hangul syllable alone, other runs of
// letters, digits and combining marks as words; spaces, punctuation and symbols separate and are
// dropped. Input is NFKC-normalised and case folded first (so "１,０００" gives "1", "000").
std::vector<std::string> rouge_tokens(std::string_view text);

struct AnswerScores {
  bool exact = false;       // byte-equal after trimming surrounding whitespace
  bool normalized = false;  // equal after normalize_answer
  bool contains = false;    // normalize_answer(reference) occurs in normalize_answer(prediction)
                            // without cutting a word: "4" is not in "14", but is in "答案是4";
                            // an empty normalised reference is contained only in an empty one
  double rouge_l = 0.0;     // F1 of the longest common subsequence of rouge_tokens, 0..1;
                            // 1 when both have no tokens, 0 when only one has none
};
AnswerScores score_answer(std::string_view prediction, std::string_view reference);

}  // namespace dsft::eval
