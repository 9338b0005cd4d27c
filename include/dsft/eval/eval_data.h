// The held-out file `dsft eval --data` reads, one record per line, sorted into what each metric
// uses: every text / Alpaca / messages record counts for perplexity; Alpaca and messages records
// are also QA items (prompt -> reference answer); multiple-choice records are scored by option
// log-likelihood only. Torch-free.
//
// Multiple-choice shape (docs/eval.md):
//   {"id": "q1", "question": "...", "choices": ["...", "..."], "answer": 1, "category": "..."}
// "question" may be "instruction" (+ "input") or a "messages" prompt ending with a user turn;
// "choices" may be "options"; "answer" is a 0-based index, a letter (A, B, ...) or the exact text
// of one option.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsft::eval {

struct QaItem {
  std::string id;
  std::string category;           // "" when the record has none
  nlohmann::ordered_json prompt;  // messages up to (not including) the reference answer
  std::string reference;          // the last assistant message / Alpaca output
};

struct McItem {
  std::string id;
  std::string category;
  nlohmann::ordered_json prompt;  // messages ending with the user turn holding the question
  std::vector<std::string> choices;
  int64_t answer = 0;  // index into choices
};

struct EvalData {
  std::string path;
  std::vector<QaItem> qa;
  std::vector<McItem> mc;
  int64_t lm_records = 0;        // records that count for perplexity (all but multiple-choice)
  std::vector<size_t> mc_lines;  // 1-based line numbers of the multiple-choice records
};

// Whether a record is multiple-choice (has a "choices" or "options" list).
bool is_multiple_choice(const nlohmann::ordered_json& record);

// A multiple-choice record as an item; `where` ("file:line") starts every error message.
McItem parse_multiple_choice(const nlohmann::ordered_json& record, const std::string& where);

// Reads and checks every line; an invalid record is a dsft::Error naming file, line and reason.
EvalData read_eval_data(const std::string& path);

}  // namespace dsft::eval
