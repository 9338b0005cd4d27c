// Task accuracy: greedy answers to held-out QA prompts scored against their references
// (exact, normalised, contains, ROUGE-L; overall and per category), and multiple-choice items
// scored by the log-likelihood the model gives each option as the assistant's reply.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsft/eval/eval_data.h"

namespace dsft::model {
class CausalLMImpl;
}
namespace dsft::text {
class Tokenizer;
class ChatTemplate;
}  // namespace dsft::text

namespace dsft::eval {

// A prompt conversation rendered with the generation prompt and tokenised as training tokenises
// chats (BOS prepended where the tokenizer asks for it and the template did not write one).
std::vector<int64_t> encode_prompt(const text::Tokenizer& tokenizer, const text::ChatTemplate& chat_template,
                                   const nlohmann::ordered_json& messages);

struct AnswerOptions {
  int64_t max_new_tokens = 64;
  std::vector<int64_t> stop_ids;  // the model's and tokenizer's EOS
};

// The model's greedy answer to `prompt_ids`, decoded without special tokens and trimmed.
std::string generate_answer(model::CausalLMImpl& model, const text::Tokenizer& tokenizer,
                            const std::vector<int64_t>& prompt_ids, const AnswerOptions& options);

// Scores every QA item: {"n", "exact_match", "normalized_match", "contains", "rouge_l",
// "per_category": {...}} (means over items). `on_item` (optional) receives each item's row:
// {"id", "category", "reference", "prediction", "exact", "normalized", "contains", "rouge_l"}.
nlohmann::json score_qa(model::CausalLMImpl& model, const text::Tokenizer& tokenizer,
                        const text::ChatTemplate& chat_template, const std::vector<QaItem>& items,
                        const AnswerOptions& options,
                        const std::function<void(const nlohmann::json&)>& on_item = {});

// Σ log p(option tokens | prompt) for each option: the tokens of the assistant turn that holds the
// option as the template writes it (the option text and the end-of-turn token), the same tokens
// training would learn.
std::vector<double> option_log_likelihoods(model::CausalLMImpl& model, const text::Tokenizer& tokenizer,
                                           const text::ChatTemplate& chat_template, const McItem& item,
                                           const c10::Device& device);

// {"n", "accuracy", "per_category": {"<name>": {"n", "accuracy"}}}; `on_item` gets
// {"id", "category", "answer", "predicted", "log_likelihoods", "correct"} per item.
nlohmann::json score_multiple_choice(model::CausalLMImpl& model, const text::Tokenizer& tokenizer,
                                     const text::ChatTemplate& chat_template,
                                     const std::vector<McItem>& items, const c10::Device& device,
                                     const std::function<void(const nlohmann::json&)>& on_item = {});

}  // namespace dsft::eval
