// QA accuracy (greedy answers scored by text_metrics) and multiple-choice accuracy (the option the
// model finds most likely as its reply), overall and per category.
#include "dsft/eval/accuracy.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>

#include "dsft/eval/text_metrics.h"
#include "dsft/model/causal_lm.h"
#include "dsft/model/generate.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"
#include "dsft/train/trainer.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::eval {

namespace {

void prepend_bos(const text::Tokenizer& tok, std::vector<int32_t>& ids, std::vector<uint8_t>* mask) {
  // As the training data path does: BOS where the tokenizer asks for it and the text lacks it.
  if (!tok.add_bos_for_training || !tok.bos_id) return;
  if (!ids.empty() && ids.front() == *tok.bos_id) return;
  ids.insert(ids.begin(), *tok.bos_id);
  if (mask) mask->insert(mask->begin(), 0);
}

struct Means {
  int64_t n = 0;
  double exact = 0, normalized = 0, contains = 0, rouge = 0;
  void add(const AnswerScores& s) {
    ++n;
    exact += s.exact;
    normalized += s.normalized;
    contains += s.contains;
    rouge += s.rouge_l;
  }
  nlohmann::json to_json() const {
    const double d = n > 0 ? static_cast<double>(n) : 1.0;
    return {{"n", n},
            {"exact_match", exact / d},
            {"normalized_match", normalized / d},
            {"contains", contains / d},
            {"rouge_l", rouge / d}};
  }
};

}  // namespace

std::vector<int64_t> encode_prompt(const text::Tokenizer& tok, const text::ChatTemplate& tmpl,
                                   const nlohmann::ordered_json& messages) {
  const std::string rendered = tmpl.render(messages, /*add_generation_prompt=*/true);
  std::vector<int32_t> ids = tok.encode(rendered, /*add_special_tokens=*/false);  // the template writes BOS
  prepend_bos(tok, ids, nullptr);
  if (ids.empty()) throw Error("a prompt renders to no tokens with the chat template " + tmpl.name());
  return {ids.begin(), ids.end()};
}

std::string generate_answer(model::CausalLMImpl& m, const text::Tokenizer& tok,
                            const std::vector<int64_t>& prompt, const AnswerOptions& o) {
  model::GenerateOptions go;
  go.max_new_tokens = o.max_new_tokens;
  go.stop_ids = o.stop_ids;
  const std::vector<int64_t> out = model::generate(m, prompt, go);
  const std::vector<int32_t> ids(out.begin(), out.end());
  return util::trim(tok.decode(ids, /*skip_special_tokens=*/true));
}

nlohmann::json score_qa(model::CausalLMImpl& m, const text::Tokenizer& tok, const text::ChatTemplate& tmpl,
                        const std::vector<QaItem>& items, const AnswerOptions& o,
                        const std::function<void(const nlohmann::json&)>& on_item) {
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard no_grad;
  Means all;
  std::map<std::string, Means> per_category;
  for (const auto& item : items) {
    const std::string prediction = generate_answer(m, tok, encode_prompt(tok, tmpl, item.prompt), o);
    const AnswerScores s = score_answer(prediction, item.reference);
    all.add(s);
    if (!item.category.empty()) per_category[item.category].add(s);
    if (on_item)
      on_item({{"id", item.id},
               {"category", item.category},
               {"reference", item.reference},
               {"prediction", prediction},
               {"exact", s.exact},
               {"normalized", s.normalized},
               {"contains", s.contains},
               {"rouge_l", s.rouge_l}});
  }
  if (was_training) m.train();
  nlohmann::json j = all.to_json();
  j["per_category"] = nlohmann::json::object();
  for (const auto& [name, means] : per_category) j["per_category"][name] = means.to_json();
  return j;
}

std::vector<double> option_log_likelihoods(model::CausalLMImpl& m, const text::Tokenizer& tok,
                                           const text::ChatTemplate& tmpl, const McItem& item,
                                           const c10::Device& device) {
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard no_grad;
  std::vector<double> out;
  for (const auto& choice : item.choices) {
    nlohmann::ordered_json messages = item.prompt;
    messages.push_back({{"role", "assistant"}, {"content", choice}});
    const text::RenderedChat rendered = tmpl.render_with_spans(messages, false);
    text::TokenizedChat chat = text::tokenize_chat(tok, rendered);
    std::vector<uint8_t> mask = std::move(chat.train_mask);
    // Only the last assistant turn (the option) is scored, not earlier turns of the prompt.
    const auto last_one = std::find(mask.rbegin(), mask.rend(), uint8_t{1});
    if (last_one == mask.rend())
      throw Error("item " + item.id + ": the chat template " + tmpl.name() +
                  " marks no assistant tokens for option '" + choice + "'");
    const auto end = static_cast<size_t>(mask.rend() - last_one);
    size_t begin = end;
    while (begin > 0 && mask[begin - 1] == 1) --begin;
    std::fill(mask.begin(), mask.begin() + static_cast<std::ptrdiff_t>(begin), uint8_t{0});
    prepend_bos(tok, chat.ids, &mask);
    mask[0] = 0;
    train::Sample s;
    s.ids = std::move(chat.ids);
    s.labels_mask = std::move(mask);
    s.segment_ids.assign(s.ids.size(), 0);
    const int32_t pad = tok.pad_id.value_or(tok.eos_id.value_or(0));
    const train::BatchTensors t = train::to_tensors(train::collate({&s}, pad), device);
    out.push_back(-train::loss_sum(m, t, {}, std::nullopt));
  }
  if (was_training) m.train();
  return out;
}

nlohmann::json score_multiple_choice(model::CausalLMImpl& m, const text::Tokenizer& tok,
                                     const text::ChatTemplate& tmpl, const std::vector<McItem>& items,
                                     const c10::Device& device,
                                     const std::function<void(const nlohmann::json&)>& on_item) {
  int64_t n = 0, correct = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> per_category;  // n, correct
  for (const auto& item : items) {
    const std::vector<double> ll = option_log_likelihoods(m, tok, tmpl, item, device);
    const auto predicted = static_cast<int64_t>(std::max_element(ll.begin(), ll.end()) - ll.begin());
    const bool ok = predicted == item.answer;
    ++n;
    correct += ok;
    if (!item.category.empty()) {
      auto& c = per_category[item.category];
      ++c.first;
      c.second += ok;
    }
    if (on_item)
      on_item({{"id", item.id},
               {"category", item.category},
               {"answer", item.answer},
               {"predicted", predicted},
               {"log_likelihoods", ll},
               {"correct", ok}});
  }
  nlohmann::json j = {{"n", n},
                      {"accuracy", n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0}};
  j["per_category"] = nlohmann::json::object();
  for (const auto& [name, c] : per_category)
    j["per_category"][name] = {{"n", c.first},
                               {"accuracy", static_cast<double>(c.second) / static_cast<double>(c.first)}};
  return j;
}

}  // namespace dsft::eval
