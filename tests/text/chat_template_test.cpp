// Chat templates: the fixture renderings (transformers + jinja2 references) byte for byte, the
// built-in families against hand-derived strings, refusal of unsupported Jinja, and assistant spans.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "dsft/text/chat_template.h"
#include "dsft/util/error.h"

using dsft::text::ChatSpecialTokens;
using dsft::text::ChatTemplate;
using dsft::text::RenderedChat;
using oj = nlohmann::ordered_json;

namespace {

const std::string kFixtures = std::string(DSFT_FIXTURES_DIR) + "/tokenizers";
const std::string BOS = "<｜begin▁of▁sentence｜>";
const std::string EOS = "<｜end▁of▁sentence｜>";
const std::string U = "<｜User｜>";
const std::string A = "<｜Assistant｜>";

std::vector<oj> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f) << "missing fixture " << path;
  std::vector<oj> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(oj::parse(line));
  return rows;
}

oj extra_of(const oj& c) {
  oj extra = c.value("template_kwargs", oj::object());
  if (c.contains("tools")) extra["tools"] = c["tools"];
  return extra;
}

std::vector<std::string> span_texts(const RenderedChat& r) {
  std::vector<std::string> out;
  for (auto [b, e] : r.assistant_spans) out.push_back(r.text.substr(b, e - b));
  return out;
}

oj msg(const std::string& role, const oj& content) { return oj{{"role", role}, {"content", content}}; }

void expect_error_containing(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected dsft::Error containing '" << needle << "'";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

class ChatFixture : public ::testing::TestWithParam<std::string> {};

// Every case of <name>.chat.jsonl renders to exactly its reference text.
TEST_P(ChatFixture, RendersEveryCaseByteIdentical) {
  const std::string name = GetParam();
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kFixtures + "/" + name);
  auto cases = read_jsonl(kFixtures + "/" + name + ".chat.jsonl");
  ASSERT_EQ(cases.size(), 15u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const oj& c = cases[i];
    std::string got = tmpl.render(c["messages"], c["add_generation_prompt"].get<bool>(), extra_of(c));
    EXPECT_EQ(got, c["rendered"].get<std::string>()) << name << " case " << i;
  }
}

// Spans on every fixture conversation: ordered, disjoint, and each one ends in an end-of-turn
// token or a tool-call close, starts after the role header, and holds the message's final text.
TEST_P(ChatFixture, SpansCoverEachAssistantTurn) {
  const std::string name = GetParam();
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kFixtures + "/" + name);
  for (const oj& c : read_jsonl(kFixtures + "/" + name + ".chat.jsonl")) {
    RenderedChat r = tmpl.render_with_spans(c["messages"], c["add_generation_prompt"].get<bool>(), extra_of(c));
    EXPECT_EQ(r.text, c["rendered"].get<std::string>());
    size_t n_assistant = 0, prev = 0;
    for (const auto& m : c["messages"]) n_assistant += m["role"] == "assistant";
    ASSERT_EQ(r.assistant_spans.size(), n_assistant) << r.text;
    size_t k = 0;
    for (const auto& m : c["messages"]) {
      if (m["role"] != "assistant") continue;
      auto [b, e] = r.assistant_spans[k++];
      ASSERT_LE(prev, b);
      ASSERT_LE(b, e);
      prev = e;
      std::string span = r.text.substr(b, e - b);
      if (!m["content"].is_string() || m["content"].get<std::string>().empty()) continue;  // tool calls
      std::string content = m["content"];
      size_t think = content.find("</think>");
      if (name == "qwen2" && think != std::string::npos) content = content.substr(think + 8);
      if (name == "llama3") {
        content.erase(0, content.find_first_not_of(" \n\t"));
        content.erase(content.find_last_not_of(" \n\t") + 1);
      }
      if (name == "qwen2") content.erase(0, content.find_first_not_of('\n'));
      std::string eot = name == "deepseek-v3" ? EOS : name == "qwen2" ? "<|im_end|>" : "<|eot_id|>";
      ASSERT_GE(span.size(), content.size() + eot.size()) << span;
      EXPECT_EQ(span.substr(span.size() - content.size() - eot.size()), content + eot) << span;
      // The role header stays outside the span.
      EXPECT_EQ(span.find(name == "deepseek-v3" ? A : name == "qwen2" ? "<|im_start|>" : "<|start_header_id|>"),
                std::string::npos)
          << span;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ChatFixture, ::testing::Values("deepseek-v3", "qwen2", "llama3"));

TEST(ChatTemplate, RecognisesPublishedTemplates) {
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(kFixtures + "/deepseek-v3").name(), "deepseek-v3");
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(kFixtures + "/llama3").name(), "llama3");
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(kFixtures + "/qwen2").name(), "custom");  // Qwen3's, not built in
}

// The built-in deepseek-v3 source is the published one: it renders the fixture identically.
TEST(ChatTemplate, NamedDeepSeekV3MatchesFixture) {
  ChatTemplate tmpl = ChatTemplate::named("deepseek-v3");
  for (const oj& c : read_jsonl(kFixtures + "/deepseek-v3.chat.jsonl"))
    EXPECT_EQ(tmpl.render(c["messages"], c["add_generation_prompt"].get<bool>()), c["rendered"].get<std::string>());
}

// R1: only the last system prompt, history without the reasoning, reply opened with <think>\n.
TEST(ChatTemplate, DeepSeekR1HandDerived) {
  oj m = oj::array({msg("system", "First system."), msg("system", "Second system."), msg("user", "1+1?"),
                    msg("assistant", "<think>\nOne plus one.\n</think>\n\n2"), msg("user", "2+2?")});
  const std::string want = BOS + "Second system." + U + "1+1?" + A + "\n\n2" + EOS + U + "2+2?" + A + "<think>\n";
  EXPECT_EQ(ChatTemplate::named("deepseek-r1").render(m, true), want);
  EXPECT_EQ(ChatTemplate::named("deepseek-r1-distill").render(m, true), want);
  EXPECT_EQ(ChatTemplate::named("deepseek-r1").render(m, false), BOS + "Second system." + U + "1+1?" + A + "\n\n2" + EOS + U + "2+2?");

  // A final assistant turn is also cut after </think>; a turn without </think> is kept whole.
  oj done = oj::array({msg("user", "hi"), msg("assistant", "plain answer"), msg("user", "and?"),
                       msg("assistant", "<think>x</think>final")});
  RenderedChat r = ChatTemplate::named("deepseek-r1").render_with_spans(done);
  EXPECT_EQ(r.text, BOS + U + "hi" + A + "plain answer" + EOS + U + "and?" + A + "final" + EOS);
  EXPECT_EQ(span_texts(r), (std::vector<std::string>{"plain answer" + EOS, "final" + EOS}));

  // The reasoning variant keeps the final turn's reasoning (what a reasoning fine-tune learns);
  // history is still cut; the span takes the whole final turn from <think> on (the model may
  // open its reasoning itself, or be handed "<think>\n" by R1's generation prompt).
  oj trace = oj::array({msg("user", "hi"), msg("assistant", "<think>\nold\n</think>\n\nplain"), msg("user", "and?"),
                        msg("assistant", "<think>\nstep by step\n</think>\n\nfinal")});
  RenderedChat rr = ChatTemplate::named("deepseek-r1-reasoning").render_with_spans(trace);
  EXPECT_EQ(rr.text, BOS + U + "hi" + A + "\n\nplain" + EOS + U + "and?" + A + "<think>\nstep by step\n</think>\n\nfinal" + EOS);
  EXPECT_EQ(span_texts(rr), (std::vector<std::string>{"\n\nplain" + EOS, "<think>\nstep by step\n</think>\n\nfinal" + EOS}));
  EXPECT_EQ(ChatTemplate::named("deepseek-r1-reasoning").render(m, true),
            ChatTemplate::named("deepseek-r1").render(m, true));

  // V3 keeps the reasoning and joins every system prompt.
  EXPECT_EQ(ChatTemplate::named("deepseek-v3").render(m, true),
            BOS + "First system.\n\nSecond system." + U + "1+1?" + A + "<think>\nOne plus one.\n</think>\n\n2" + EOS + U +
                "2+2?" + A);
}

TEST(ChatTemplate, OtherFamiliesHandDerived) {
  oj m = oj::array({msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Bye")});
  EXPECT_EQ(ChatTemplate::named("deepseek-llm").render(m, true),
            BOS + "Be brief.\n\nUser: Hi\n\nAssistant: Hello!" + EOS + "User: Bye\n\nAssistant:");
  EXPECT_EQ(ChatTemplate::named("chatml").render(m, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!"
            "<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::named("qwen2").render(oj::array({msg("user", "Hi")}), true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::named("llama3").render(oj::array({msg("user", "  Hi \n")}), false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(ChatTemplate::named("llama3").render(oj::array({msg("user", "Hi")}), true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, AlpacaFromRecords) {
  ChatTemplate alpaca = ChatTemplate::named("alpaca");
  oj plain = dsft::text::messages_from_record(oj{{"instruction", "Name a colour."}, {"input", ""}, {"output", "Blue."}});
  RenderedChat r = alpaca.render_with_spans(plain);
  EXPECT_EQ(r.text,
            "<s>Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nName a colour.\n\n### Response:\nBlue.</s>");
  EXPECT_EQ(span_texts(r), std::vector<std::string>{"Blue.</s>"});

  oj with_input = dsft::text::messages_from_record(
      oj{{"instruction", "Translate."}, {"input", "你好"}, {"output", "Hello"}});
  EXPECT_EQ(alpaca.render(with_input, false),
            "<s>Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n"
            "### Input:\n你好\n\n### Response:\nHello</s>");
  EXPECT_EQ(with_input[0]["content"], "Translate.\n\n你好");  // other templates see one user text
  std::string prompt = alpaca.render(oj::array({msg("user", "Q")}), true);
  const std::string tail = "request.\n\n### Instruction:\nQ\n\n### Response:\n";
  ASSERT_GE(prompt.size(), tail.size());
  EXPECT_EQ(prompt.substr(prompt.size() - tail.size()), tail);
  EXPECT_THROW(dsft::text::messages_from_record(oj{{"text", "x"}}), dsft::Error);
}

TEST(ChatTemplate, SpansAcrossFamilies) {
  oj m = oj::array({msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Bye"), msg("assistant", "  See you. ")});
  EXPECT_EQ(span_texts(ChatTemplate::named("deepseek-v3").render_with_spans(m)),
            (std::vector<std::string>{"Hello!" + EOS, "  See you. " + EOS}));
  // The space the template writes after "Assistant:" follows the generation prompt, so the model
  // produces it: it is part of the span.
  EXPECT_EQ(span_texts(ChatTemplate::named("deepseek-llm").render_with_spans(m)),
            (std::vector<std::string>{" Hello!" + EOS, "   See you. " + EOS}));
  EXPECT_EQ(span_texts(ChatTemplate::named("chatml").render_with_spans(m)),
            (std::vector<std::string>{"Hello!<|im_end|>", "  See you. <|im_end|>"}));
  EXPECT_EQ(span_texts(ChatTemplate::named("llama3").render_with_spans(m)),
            (std::vector<std::string>{"Hello!<|eot_id|>", "See you.<|eot_id|>"}));
  // The generation prompt and the user turns are never inside a span.
  RenderedChat r = ChatTemplate::named("deepseek-v3").render_with_spans(oj::array({msg("user", "x")}), true);
  EXPECT_EQ(r.text, BOS + U + "x" + A);
  EXPECT_TRUE(r.assistant_spans.empty());
  // An empty reply still teaches the end of turn.
  EXPECT_EQ(span_texts(ChatTemplate::named("chatml").render_with_spans(oj::array({msg("user", "x"), msg("assistant", "")}))),
            std::vector<std::string>{"<|im_end|>"});
}

// Qwen3 rewrites earlier turns (reasoning dropped before the last query), so spans cannot come from
// prefix renderings; the reasoning block of the final turn is part of its span.
TEST(ChatTemplate, SpansQwen3ReasoningAndToolCalls) {
  ChatTemplate qwen = ChatTemplate::from_tokenizer_config(kFixtures + "/qwen2");
  oj m = oj::array({msg("user", "a"), msg("assistant", "<think>\nr1\n</think>\n\nA1"), msg("user", "b"),
                    msg("assistant", "<think>\nr2\n</think>\n\nA2")});
  RenderedChat r = qwen.render_with_spans(m);
  EXPECT_EQ(span_texts(r), (std::vector<std::string>{"A1<|im_end|>", "<think>\nr2\n</think>\n\nA2<|im_end|>"}));

  oj calls = oj::array({msg("user", "weather?"),
                        oj{{"role", "assistant"}, {"content", ""},
                           {"tool_calls", oj::array({oj{{"type", "function"},
                                                        {"function", {{"name", "get"}, {"arguments", "{\"c\": 1}"}}}}})}},
                        msg("tool", "sunny"), msg("assistant", "Sunny.")});
  r = qwen.render_with_spans(calls);
  EXPECT_EQ(span_texts(r), (std::vector<std::string>{"<tool_call>\n{\"name\": \"get\", \"arguments\": {\"c\": 1}}\n</tool_call><|im_end|>",
                                                    "<think>\n\n</think>\n\nSunny.<|im_end|>"}));

  // DeepSeek-V3's tool-call turn (content null) becomes one span ending at the call's close.
  oj ds = calls;
  ds[1]["content"] = nullptr;
  r = ChatTemplate::named("deepseek-v3").render_with_spans(ds);
  ASSERT_EQ(r.assistant_spans.size(), 2u);
  EXPECT_EQ(span_texts(r)[0],
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n{\"c\": 1}\n```<｜tool▁call▁end｜>");
  EXPECT_EQ(span_texts(r)[1], "Sunny." + EOS);
}

TEST(ChatTemplate, ExtraVariablesAndTools) {
  ChatTemplate qwen = ChatTemplate::from_tokenizer_config(kFixtures + "/qwen2");
  oj m = oj::array({msg("user", "hi")});
  EXPECT_EQ(qwen.render(m, true, oj{{"enable_thinking", false}}),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  // tools go through tojson with Python's separators and insertion-ordered keys.
  oj tools = oj::array({oj{{"type", "function"}, {"function", {{"name", "f"}, {"description", "é"}}}}});
  std::string out = qwen.render(m, false, oj{{"tools", tools}});
  EXPECT_NE(out.find("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"é\"}}\n</tools>"),
            std::string::npos)
      << out;
}

TEST(ChatTemplate, UnsupportedConstructsAreRefusedAtLoad) {
  ChatSpecialTokens tok;
  expect_error_containing([&] { ChatTemplate::from_source("{% macro f() %}x{% endmacro %}", tok); }, "'{% macro %}'");
  expect_error_containing([&] { ChatTemplate::from_source("{{ messages | wordwrap(5) }}", tok); }, "filter 'wordwrap'");
  expect_error_containing([&] { ChatTemplate::from_source("{% if x is prime %}{% endif %}", tok); }, "test 'is prime'");
  expect_error_containing([&] { ChatTemplate::from_source("{% include 'other.jinja' %}", tok); }, "'{% include %}'");
  expect_error_containing([&] { ChatTemplate::from_source("{% for m in messages %}", tok); }, "ends inside a block");
  expect_error_containing([&] { ChatTemplate::from_source("line one\n{{ 1 + }}", tok); }, "line 2");
}

TEST(ChatTemplate, RuntimeErrorsAreNamed) {
  ChatTemplate v3 = ChatTemplate::named("deepseek-v3");
  // A user turn without text: V3 adds None to a string, which Python refuses too.
  expect_error_containing([&] { v3.render(oj::array({msg("user", nullptr)})); }, "unsupported operand");
  ChatTemplate raising = ChatTemplate::from_source(
      "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}",
      ChatSpecialTokens{});
  expect_error_containing([&] { raising.render(oj::array({msg("assistant", "x")})); }, "Conversation must start with user");
  EXPECT_EQ(raising.render(oj::array({msg("user", "x")})), "");
  expect_error_containing([&] { ChatTemplate::named("no-such-family"); }, "deepseek-r1");
  expect_error_containing([&] { v3.render(oj{{"role", "user"}}); }, "JSON array");
  expect_error_containing([&] { ChatTemplate::from_tokenizer_config(kFixtures + "/no-such-dir"); }, "no-such-dir");
}

TEST(ChatTemplate, ResolveFromTrainingConfig) {
  // A name picks the built-in source; the model directory still supplies its special tokens.
  ChatTemplate r1 = ChatTemplate::resolve("deepseek-r1", kFixtures + "/deepseek-v3");
  EXPECT_EQ(r1.name(), "deepseek-r1");
  EXPECT_EQ(r1.special_tokens().bos_token.value_or(""), BOS);
  ChatTemplate own = ChatTemplate::resolve("auto", kFixtures + "/llama3");
  EXPECT_EQ(own.special_tokens().eos_token.value_or(""), "<|end_of_text|>");
  ChatTemplate chatml = ChatTemplate::resolve("chatml", kFixtures + "/llama3");  // llama3's tokens, ChatML text
  EXPECT_EQ(chatml.render(oj::array({msg("user", "x")})), "<|im_start|>user\nx<|im_end|>\n");
  EXPECT_EQ(ChatTemplate::builtin_names().size(), 8u);
}
