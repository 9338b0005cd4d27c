// Accuracy: multiple-choice records parse in every documented shape, the option scores equal the
// log-likelihood computed by hand from the logits and the highest one is picked; QA answers are
// the model's greedy continuation scored against the reference; the data file is sorted into
// perplexity, QA and multiple-choice records with file:line errors.
#include "dsft/eval/accuracy.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dsft/eval/eval_data.h"
#include "dsft/model/causal_lm.h"
#include "dsft/model/commands.h"
#include "dsft/model/config.h"
#include "dsft/model/generate.h"
#include "dsft/model/registry.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/sentencepiece.h"
#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"

using namespace dsft;
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

class AccuracyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (fs::temp_directory_path() / ("dsft_eval_accuracy_" + std::to_string(::getpid()))).string();
    fs::create_directories(dir_);
    text::SentencePieceTrainOptions so;
    so.input_jsonl = std::string(DSFT_SOURCE_DIR) + "/data/sample/faq_alpaca.jsonl";
    so.output_dir = dir_ + "/tok";
    so.vocab_size = 400;
    text::train_sentencepiece(so);
    tok_ = text::load_tokenizer(dir_ + "/tok").release();
    tmpl_ = new text::ChatTemplate(text::ChatTemplate::resolve("", dir_ + "/tok"));
    for (const auto& [name, text] : model::builtin_presets())
      if (name == "llama-tiny") {
        auto j = nlohmann::json::parse(text);
        j["vocab_size"] = tok_->vocab_size();
        auto config = model::parse_config(j);
        lm_ = new model::CausalLM(model::build_model(config, torch::TensorOptions().dtype(torch::kFloat32)));
        model::init_weights(**lm_, 3);
        torch::NoGradGuard no_grad;
        for (auto& p : (*lm_)->parameters())
          if (p.dim() == 2) p.mul_(6.0);
        (*lm_)->eval();
      }
  }
  static void TearDownTestSuite() {
    delete lm_;
    delete tmpl_;
    delete tok_;
    fs::remove_all(dir_);
  }
  static std::string write(const std::string& name, const std::string& content) {
    const std::string p = dir_ + "/" + name;
    std::ofstream(p) << content;
    return p;
  }

  static std::string dir_;
  static text::Tokenizer* tok_;
  static text::ChatTemplate* tmpl_;
  static model::CausalLM* lm_;
};
std::string AccuracyTest::dir_;
text::Tokenizer* AccuracyTest::tok_ = nullptr;
text::ChatTemplate* AccuracyTest::tmpl_ = nullptr;
model::CausalLM* AccuracyTest::lm_ = nullptr;

// Σ log p of the tokens of the rendered option's assistant span, by one forward over the whole
// rendered conversation (prompt rendered with the generation prompt + the option's suffix).
double ll_by_hand(model::CausalLMImpl& lm, const text::Tokenizer& tok, const text::ChatTemplate& tmpl,
                  const ojson& prompt, const std::string& option) {
  ojson messages = prompt;
  messages.push_back({{"role", "assistant"}, {"content", option}});
  const auto rendered = tmpl.render_with_spans(messages, false);
  auto chat = text::tokenize_chat(tok, rendered);
  // Training prepends BOS where the tokenizer asks for it (SentencePiece models made by dsft do).
  if (tok.add_bos_for_training && tok.bos_id && chat.ids.front() != *tok.bos_id) {
    chat.ids.insert(chat.ids.begin(), *tok.bos_id);
    chat.train_mask.insert(chat.train_mask.begin(), 0);
  }
  std::vector<int64_t> ids(chat.ids.begin(), chat.ids.end());
  torch::NoGradGuard no_grad;
  auto logp = torch::log_softmax(
      lm.forward(torch::tensor(ids, torch::kInt64).unsqueeze(0))[0].to(torch::kFloat64), -1);
  double sum = 0.0;
  for (size_t t = 1; t < ids.size(); ++t)
    if (chat.train_mask[t]) sum += logp[static_cast<int64_t>(t) - 1][ids[t]].item<double>();
  return sum;
}

}  // namespace

TEST(EvalData, MultipleChoiceShapes) {
  auto item = eval::parse_multiple_choice(
      ojson::parse(R"({"question": "Q?", "choices": ["a", "b", "c"], "answer": 2})"), "f:1");
  EXPECT_EQ(item.answer, 2);
  ASSERT_EQ(item.prompt.size(), 1u);
  EXPECT_EQ(item.prompt[0]["content"], "Q?");
  EXPECT_EQ(eval::parse_multiple_choice(
                ojson::parse(R"({"question": "Q?", "options": ["a", "b"], "answer": "B"})"), "f:1")
                .answer,
            1);
  EXPECT_EQ(
      eval::parse_multiple_choice(
          ojson::parse(R"({"instruction": "Q?", "input": "ctx", "choices": ["x", "yes"], "answer": "yes"})"),
          "f:1")
          .answer,
      1);
  const auto m = eval::parse_multiple_choice(
      ojson::parse(
          R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}], "choices": ["x", "y"], "answer": "a"})"),
      "f:1");
  EXPECT_EQ(m.answer, 0);
  EXPECT_EQ(m.prompt.size(), 2u);
  for (const char* bad :
       {R"({"question": "Q?", "choices": ["a"], "answer": 0})",
        R"({"question": "Q?", "choices": ["a", "b"], "answer": 2})",
        R"({"question": "Q?", "choices": ["a", "b"], "answer": "C"})",
        R"({"question": "Q?", "choices": ["a", "b"]})", R"({"choices": ["a", "b"], "answer": 0})",
        R"({"question": "Q?", "choices": ["a", 3], "answer": 0})"}) {
    try {
      eval::parse_multiple_choice(ojson::parse(bad), "f.jsonl:7");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("f.jsonl:7", 0), 0u) << e.what();
    }
  }
}

TEST_F(AccuracyTest, DataFileIsSortedIntoPerplexityQaAndMultipleChoice) {
  const std::string p = write(
      "mixed.jsonl",
      R"({"id": "t1", "text": "plain text"})"
      "\n"
      R"({"id": "a1", "instruction": "Q1", "input": "", "output": "A1", "category": "faq"})"
      "\n\n"
      R"({"id": "m1", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})"
      "\n"
      R"({"id": "c1", "question": "Q?", "choices": ["x", "y"], "answer": 1})"
      "\n");
  const auto d = eval::read_eval_data(p);
  EXPECT_EQ(d.lm_records, 3);
  ASSERT_EQ(d.qa.size(), 2u);
  EXPECT_EQ(d.qa[0].id, "a1");
  EXPECT_EQ(d.qa[0].category, "faq");
  EXPECT_EQ(d.qa[0].reference, "A1");
  EXPECT_EQ(d.qa[1].reference, "hello");
  ASSERT_EQ(d.mc.size(), 1u);
  EXPECT_EQ(d.mc_lines, std::vector<size_t>{5});

  const std::string bad = write("bad.jsonl", R"({"id": "a1", "instruction": "Q1", "output": "A1"})"
                                             "\n"
                                             R"({"id": "x", "prompt": "no shape"})"
                                             "\n");
  try {
    eval::read_eval_data(bad);
    FAIL() << "accepted a record without a shape";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(eval::read_eval_data(write("notjson.jsonl", "{oops\n")), Error);
  EXPECT_THROW(eval::read_eval_data(dir_ + "/missing.jsonl"), Error);
}

TEST_F(AccuracyTest, OptionLikelihoodsEqualTheLogitsAndTheLikeliestOptionIsPicked) {
  eval::McItem item;
  item.id = "q";
  item.prompt = ojson::array({{{"role", "user"}, {"content", "LX-107的重量是多少？"}}});
  item.choices = {"2.1千克", "LX-107的重量是2.1千克。", "售价199元"};
  const auto ll = eval::option_log_likelihoods(**lm_, *tok_, *tmpl_, item, torch::kCPU);
  ASSERT_EQ(ll.size(), 3u);
  size_t best = 0;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(ll[i], ll_by_hand(**lm_, *tok_, *tmpl_, item.prompt, item.choices[i]), 1e-3) << i;
    if (ll[i] > ll[best]) best = i;
  }
  item.answer = static_cast<int64_t>(best);
  std::vector<nlohmann::json> rows;
  auto r = eval::score_multiple_choice(**lm_, *tok_, *tmpl_, {item}, torch::kCPU,
                                       [&](const nlohmann::json& row) { rows.push_back(row); });
  EXPECT_EQ(r["n"], 1);
  EXPECT_DOUBLE_EQ(r["accuracy"].get<double>(), 1.0);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["predicted"], static_cast<int64_t>(best));
  item.answer = static_cast<int64_t>((best + 1) % 3);
  item.category = "c";
  r = eval::score_multiple_choice(**lm_, *tok_, *tmpl_, {item}, torch::kCPU);
  EXPECT_DOUBLE_EQ(r["accuracy"].get<double>(), 0.0);
  EXPECT_EQ(r["per_category"]["c"]["n"], 1);
}

TEST_F(AccuracyTest, QaAnswersAreTheGreedyContinuationScoredAgainstTheReference) {
  const ojson prompt = ojson::array({{{"role", "user"}, {"content", "LX-107多少钱？"}}});
  const auto ids = eval::encode_prompt(*tok_, *tmpl_, prompt);
  // The prompt is what the template renders with the generation prompt, after BOS as in training.
  auto direct = tok_->encode(tmpl_->render(prompt, true), false);
  ASSERT_TRUE(tok_->add_bos_for_training && tok_->bos_id);
  direct.insert(direct.begin(), *tok_->bos_id);
  EXPECT_EQ(std::vector<int64_t>(direct.begin(), direct.end()), ids);

  eval::AnswerOptions ao;
  ao.max_new_tokens = 6;
  model::GenerateOptions go;
  go.max_new_tokens = 6;
  const auto greedy = model::generate(**lm_, ids, go);
  const std::string expected = eval::generate_answer(**lm_, *tok_, ids, ao);
  EXPECT_EQ(expected, [&] {
    std::vector<int32_t> g(greedy.begin(), greedy.end());
    std::string s = tok_->decode(g, true);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.erase(s.begin());
    return s;
  }());
  ASSERT_FALSE(expected.empty());

  eval::QaItem right{"r", "price", prompt, expected};
  eval::QaItem wrong{"w", "price", prompt, "完全不同的答案"};
  std::vector<nlohmann::json> rows;
  auto r = eval::score_qa(**lm_, *tok_, *tmpl_, {right, wrong}, ao,
                          [&](const nlohmann::json& row) { rows.push_back(row); });
  EXPECT_EQ(r["n"], 2);
  EXPECT_DOUBLE_EQ(r["exact_match"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(r["normalized_match"].get<double>(), 0.5);
  EXPECT_GE(r["rouge_l"].get<double>(), 0.5);
  EXPECT_LT(r["rouge_l"].get<double>(), 1.0);
  EXPECT_EQ(r["per_category"]["price"]["n"], 2);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["prediction"], expected);
  EXPECT_EQ(rows[0]["exact"], true);
  EXPECT_EQ(rows[1]["exact"], false);
}
