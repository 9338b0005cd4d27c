// Chat templates: the built-in family sources, loading from tokenizer_config.json, rendering with
// the variables transformers passes, assistant-span detection, and span-aware tokenisation.
#include "dsft/text/chat_template.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"
#include "text/jinja.h"

namespace dsft::text {

namespace {

// DeepSeek-V3's published template, unchanged except that the newlines inside its string literals
// are written as '\n' escapes (the same string to Jinja).
const char* const kDeepSeekV3 =
    R"tmpl({% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %})tmpl"
    R"tmpl({% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %})tmpl"
    R"tmpl({%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %})tmpl"
    R"tmpl({% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %})tmpl"
    R"tmpl({%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %})tmpl"
    R"tmpl({%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %})tmpl"
    R"tmpl({%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}})tmpl"
    R"tmpl({%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %})tmpl"
    R"tmpl({%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %})tmpl"
    R"tmpl({{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}})tmpl"
    R"tmpl({%- set ns.is_first = true -%}{%- else %})tmpl"
    R"tmpl({{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}})tmpl"
    R"tmpl({{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %})tmpl"
    R"tmpl({%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %})tmpl"
    R"tmpl({{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}})tmpl"
    R"tmpl({%- set ns.is_tool = false -%}{%- else %})tmpl"
    R"tmpl({{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %})tmpl"
    R"tmpl({%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %})tmpl"
    R"tmpl({{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}})tmpl"
    R"tmpl({%- set ns.is_output_first = false %}{%- else %})tmpl"
    R"tmpl({{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %})tmpl"
    R"tmpl({%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %})tmpl"
    R"tmpl({% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %})tmpl";

// DeepSeek-R1 and the R1-Distill models: V3's template except that only the last system prompt is
// kept, past assistant turns keep only the text after </think>, and the generation prompt opens
// the reasoning block.
const char* const kDeepSeekR1 =
    R"tmpl({% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %})tmpl"
    R"tmpl({% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %})tmpl"
    R"tmpl({%- for message in messages %}{%- if message['role'] == 'system' %})tmpl"
    R"tmpl({% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}})tmpl"
    R"tmpl({{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %})tmpl"
    R"tmpl({%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %})tmpl"
    R"tmpl({%- if message['role'] == 'assistant' and message['content'] is none %})tmpl"
    R"tmpl({%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %})tmpl"
    R"tmpl({{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}})tmpl"
    R"tmpl({%- set ns.is_first = true -%}{%- else %})tmpl"
    R"tmpl({{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}})tmpl"
    R"tmpl({{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %})tmpl"
    R"tmpl({%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %})tmpl"
    R"tmpl({{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}})tmpl"
    R"tmpl({%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %})tmpl"
    R"tmpl({% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %})tmpl"
    R"tmpl({{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %})tmpl"
    R"tmpl({%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %})tmpl"
    R"tmpl({{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}})tmpl"
    R"tmpl({%- set ns.is_output_first = false %}{%- else %})tmpl"
    R"tmpl({{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %})tmpl"
    R"tmpl({%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %})tmpl"
    R"tmpl({% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %})tmpl";

// For training on reasoning traces: R1's template except that the final message, when it is an
// assistant turn, keeps its reasoning block (<think>...</think>answer), so the loss covers the
// reasoning the model is to learn; earlier assistant turns are still cut after </think> as at
// inference. The span is the whole final turn from <think> on.
const std::string& deepseek_r1_reasoning_source() {
  static const std::string source = [] {
    std::string s = kDeepSeekR1;
    const std::string cut = "{% if '</think>' in content %}";
    const size_t at = s.find(cut);
    s.replace(at, cut.size(), "{% if '</think>' in content and not loop.last %}");
    return s;
  }();
  return source;
}

// deepseek-llm-7b/67b-chat (and deepseek-coder-v2 style) "User: ...\n\nAssistant: ..." format.
const char* const kDeepSeekLlm =
    R"tmpl({% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %})tmpl"
    R"tmpl({{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %})tmpl"
    R"tmpl({{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %})tmpl"
    R"tmpl({{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %})tmpl"
    R"tmpl({{ message['content'] + '\n\n' }}{% endif %}{% endfor %})tmpl"
    R"tmpl({% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %})tmpl";

// Plain ChatML.
const char* const kChatml =
    R"tmpl({% for message in messages %})tmpl"
    R"tmpl({{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}})tmpl"
    R"tmpl({% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})tmpl";

// Qwen2-Instruct: ChatML with a default system prompt.
const char* const kQwen2 =
    R"tmpl({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %})tmpl"
    R"tmpl({{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %})tmpl"
    R"tmpl({{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}})tmpl"
    R"tmpl({% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})tmpl";

// Llama-3-Instruct (the revision whose assistant header depends on add_generation_prompt).
const char* const kLlama3 =
    R"tmpl({% set loop_messages = messages %}{% for message in loop_messages %})tmpl"
    R"tmpl({% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %})tmpl"
    R"tmpl({% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %})tmpl"
    R"tmpl({% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})tmpl";

// Llama-3-Instruct as first released: the assistant header is always appended.
const char* const kLlama3Original =
    R"tmpl({% set loop_messages = messages %}{% for message in loop_messages %})tmpl"
    R"tmpl({% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %})tmpl"
    R"tmpl({% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %})tmpl"
    R"tmpl({{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }})tmpl";

// Alpaca's prompt. The preamble is the last system message, else Alpaca's own (the "paired with
// an input" variant when a user turn carries an `input`); user turns written by
// messages_from_record keep `instruction` and `input` apart.
const char* const kAlpaca = R"tmpl(
{%- set ns = namespace(system='', has_input=false) -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] -%}{%- endif -%}
  {%- if message['role'] == 'user' and message['input'] is defined and message['input'] -%}
    {%- set ns.has_input = true -%}
  {%- endif -%}
{%- endfor -%}
{%- if not ns.system -%}
  {%- if ns.has_input -%}
    {%- set ns.system = 'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.' -%}
  {%- else -%}
    {%- set ns.system = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.' -%}
  {%- endif -%}
{%- endif -%}
{{- bos_token if bos_token is defined else '' -}}
{{- ns.system + '\n\n' -}}
{%- for message in messages -%}
  {%- if message['role'] == 'user' -%}
    {%- if message['instruction'] is defined -%}
      {{- '### Instruction:\n' + message['instruction'] -}}
      {%- if message['input'] is defined and message['input'] -%}{{- '\n\n### Input:\n' + message['input'] -}}{%- endif -%}
    {%- else -%}
      {{- '### Instruction:\n' + message['content'] -}}
    {%- endif -%}
    {{- '\n\n' -}}
  {%- elif message['role'] == 'assistant' -%}
    {{- '### Response:\n' + message['content'] + eos_token -}}
    {%- if not loop.last -%}{{- '\n\n' -}}{%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '### Response:\n' -}}{%- endif -%}
)tmpl";

const char* const kDeepSeekBos = "<｜begin▁of▁sentence｜>";
const char* const kDeepSeekEos = "<｜end▁of▁sentence｜>";

struct Builtin {
  const char* name;
  const char* source;
  ChatSpecialTokens tokens;
};

const std::vector<Builtin>& builtins() {
  static const std::vector<Builtin> table = {
      {"deepseek-v3", kDeepSeekV3, {kDeepSeekBos, kDeepSeekEos, kDeepSeekEos, std::nullopt, {}}},
      {"deepseek-r1", kDeepSeekR1, {kDeepSeekBos, kDeepSeekEos, kDeepSeekEos, std::nullopt, {}}},
      {"deepseek-r1-reasoning", deepseek_r1_reasoning_source().c_str(),
       {kDeepSeekBos, kDeepSeekEos, kDeepSeekEos, std::nullopt, {}}},
      {"deepseek-llm", kDeepSeekLlm, {kDeepSeekBos, kDeepSeekEos, kDeepSeekEos, std::nullopt, {}}},
      {"qwen2", kQwen2, {std::nullopt, "<|im_end|>", "<|endoftext|>", std::nullopt, {"<|im_start|>", "<|im_end|>"}}},
      {"chatml", kChatml, {std::nullopt, "<|im_end|>", "<|endoftext|>", std::nullopt, {"<|im_start|>", "<|im_end|>"}}},
      {"llama3", kLlama3, {"<|begin_of_text|>", "<|eot_id|>", std::nullopt, std::nullopt, {}}},
      {"alpaca", kAlpaca, {"<s>", "</s>", std::nullopt, "<unk>", {}}},
  };
  return table;
}

// Other spellings of a family name a config may use.
std::string canonical_name(const std::string& name) {
  static const std::map<std::string, std::string> aliases = {
      {"deepseek-r1-distill", "deepseek-r1"}, {"deepseek_v3", "deepseek-v3"}, {"deepseek-r1-distill-qwen", "deepseek-r1"},
      {"deepseek-r1-distill-llama", "deepseek-r1"}, {"r1", "deepseek-r1"}, {"deepseek_r1", "deepseek-r1"},
      {"deepseek", "deepseek-llm"}, {"deepseek-chat", "deepseek-llm"}, {"qwen2.5", "qwen2"}, {"qwen", "qwen2"},
      {"llama-3", "llama3"}, {"llama3-instruct", "llama3"}};
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto it = aliases.find(n);
  return it == aliases.end() ? n : it->second;
}

// Sources compare equal whether their newlines are written literally or as '\n' escapes.
std::string normalize_source(std::string s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
      out += '\n';
      ++i;
    } else {
      out += s[i];
    }
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string recognise(const std::string& source) {
  std::string norm = normalize_source(source);
  for (const auto& b : builtins())
    if (normalize_source(b.source) == norm) return b.name;
  if (normalize_source(kLlama3Original) == norm) return "llama3";
  return {};
}

// Strings after which an assistant turn ends; the first one right after a turn's text joins its span.
const std::vector<std::string>& end_of_turn_markers() {
  static const std::vector<std::string> m = {"<｜end▁of▁sentence｜>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>",
                                             "<|EOT|>", "<|endoftext|>", "</s>"};
  return m;
}

// Special-token strings of the supported families. A span edge found inside one of them is moved
// to its boundary (two renderings can share the tail of different tokens, such as "｜>").
const std::vector<std::string>& family_markers() {
  static const std::vector<std::string> m = {
      "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>",
      "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>",
      "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
      "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
      "<|end_header_id|>", "<|eot_id|>", "<|EOT|>", "<tool_call>", "</tool_call>", "<think>", "</think>",
      "<s>", "</s>"};
  return m;
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + path + " (needed for the chat template)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

std::optional<std::string> token_string(const nlohmann::json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  throw Error(std::string("tokenizer_config.json: '") + key + "' must be a string or an object with \"content\"");
}

size_t common_prefix(const std::string& a, const std::string& b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// Common suffix of a and b that does not reach into the first `prefix` bytes of either.
size_t common_suffix(const std::string& a, const std::string& b, size_t prefix) {
  size_t n = std::min(a.size(), b.size()) - prefix, i = 0;
  while (i < n && a[a.size() - 1 - i] == b[b.size() - 1 - i]) ++i;
  return i;
}

bool utf8_continuation(const std::string& s, size_t i) {
  return i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

ChatSpecialTokens ChatSpecialTokens::from_tokenizer_config(const nlohmann::json& config) {
  ChatSpecialTokens t;
  t.bos_token = token_string(config, "bos_token");
  t.eos_token = token_string(config, "eos_token");
  t.pad_token = token_string(config, "pad_token");
  t.unk_token = token_string(config, "unk_token");
  auto it = config.find("additional_special_tokens");
  if (it != config.end() && it->is_array()) {
    for (const auto& e : *it) {
      if (e.is_string()) t.additional_special_tokens.push_back(e.get<std::string>());
      else if (e.is_object() && e.contains("content") && e["content"].is_string())
        t.additional_special_tokens.push_back(e["content"].get<std::string>());
    }
  }
  return t;
}

ChatTemplate ChatTemplate::from_source(const std::string& source, ChatSpecialTokens tokens, const std::string& name) {
  ChatTemplate t;
  std::string family = recognise(source);
  t.name_ = family.empty() ? name : family;
  t.source_ = source;
  t.tokens_ = std::move(tokens);
  t.template_ = std::make_shared<const jinja::Template>(source, t.name_);
  return t;
}

ChatTemplate ChatTemplate::from_tokenizer_config(const std::string& path) {
  std::string file = is_directory(path) ? path + "/tokenizer_config.json" : path;
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(read_text_file(file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(file + " is not valid JSON: " + e.what());
  }
  return from_tokenizer_config(cfg, file);
}

ChatTemplate ChatTemplate::from_tokenizer_config(const nlohmann::json& config, const std::string& origin) {
  if (!config.is_object()) throw Error(origin + ": expected a JSON object");
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null())
    throw Error(origin + " has no chat_template; name one in the training config (chat_template: " +
                "deepseek-v3 | deepseek-r1 | deepseek-r1-reasoning | deepseek-llm | qwen2 | chatml | llama3 | alpaca)");
  std::string source;
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {  // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
    for (const auto& e : *it)
      if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
        source = e["template"].get<std::string>();
    if (source.empty()) throw Error(origin + ": chat_template is a list without a \"default\" entry");
  } else {
    throw Error(origin + ": chat_template must be a string or a list of {name, template}");
  }
  ChatTemplate t = from_source(source, ChatSpecialTokens::from_tokenizer_config(config), origin);
  if (t.name_ == origin) t.name_ = "custom";
  return t;
}

ChatTemplate ChatTemplate::named(const std::string& name, std::optional<ChatSpecialTokens> tokens) {
  std::string n = canonical_name(name);
  for (const auto& b : builtins()) {
    if (n == b.name) {
      ChatTemplate t = from_source(b.source, tokens ? *tokens : b.tokens, b.name);
      t.name_ = b.name;
      return t;
    }
  }
  std::string known;
  for (const auto& b : builtins()) known += (known.empty() ? "" : ", ") + std::string(b.name);
  throw Error("unknown chat template '" + name + "' (built-in: " + known +
              "; or leave it empty to use the model's tokenizer_config.json)");
}

ChatTemplate ChatTemplate::resolve(const std::string& name, const std::string& model_dir) {
  if (name.empty() || name == "auto") return from_tokenizer_config(model_dir);
  std::optional<ChatSpecialTokens> tokens;
  std::string cfg_path = model_dir + "/tokenizer_config.json";
  std::error_code ec;
  if (!model_dir.empty() && std::filesystem::is_regular_file(cfg_path, ec)) {
    nlohmann::json cfg;
    try {
      cfg = nlohmann::json::parse(read_text_file(cfg_path));
    } catch (const nlohmann::json::exception& e) {
      throw Error(cfg_path + " is not valid JSON: " + e.what());
    }
    ChatSpecialTokens t = ChatSpecialTokens::from_tokenizer_config(cfg);
    // A config without bos/eos keeps the family's own strings.
    ChatSpecialTokens base = named(name).special_tokens();
    if (!t.bos_token) t.bos_token = base.bos_token;
    if (!t.eos_token) t.eos_token = base.eos_token;
    tokens = t;
  }
  return named(name, tokens);
}

std::vector<std::string> ChatTemplate::builtin_names() {
  std::vector<std::string> out;
  for (const auto& b : builtins()) out.emplace_back(b.name);
  return out;
}

std::string ChatTemplate::builtin_source(const std::string& name) { return named(name).source(); }

// ---------------------------------------------------------------------------------------------

namespace {

using VarMap = std::map<std::string, jinja::Value>;

jinja::Value strftime_now_fn() {
  return jinja::Value::callable("strftime_now", [](const jinja::List& args, const jinja::Kwargs&) {
    if (args.empty() || !args[0].is_string()) throw Error("strftime_now() takes a format string");
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    size_t n = std::strftime(buf, sizeof buf, args[0].str().c_str(), &tm);
    return jinja::Value::string(std::string(buf, n));
  });
}

jinja::Value raise_exception_fn() {
  return jinja::Value::callable("raise_exception", [](const jinja::List& args, const jinja::Kwargs&) -> jinja::Value {
    throw Error("the template raised an error: " + (args.empty() ? std::string("(no message)") : args[0].to_output()));
  });
}

template <typename Json>
VarMap extra_to_vars(const Json& extra) {
  VarMap vars;
  if (extra.is_null()) return vars;
  if (!extra.is_object()) throw Error("chat template extra variables must be a JSON object");
  for (auto it = extra.begin(); it != extra.end(); ++it) vars[it.key()] = jinja::Value::from_json(it.value());
  return vars;
}

template <typename Json>
jinja::Value messages_value(const Json& messages) {
  if (!messages.is_array()) throw Error("chat messages must be a JSON array of {\"role\", \"content\"} objects");
  return jinja::Value::from_json(messages);
}

}  // namespace

// The variables transformers' apply_chat_template passes, then the caller's extras.
static std::string render_value(const jinja::Template& tmpl, const ChatSpecialTokens& tok, const jinja::Value& messages,
                                bool add_generation_prompt, const VarMap& extra) {
  VarMap vars;
  vars["messages"] = messages;
  vars["tools"] = jinja::Value::none();
  vars["documents"] = jinja::Value::none();
  vars["add_generation_prompt"] = jinja::Value::boolean(add_generation_prompt);
  if (tok.bos_token) vars["bos_token"] = jinja::Value::string(*tok.bos_token);
  if (tok.eos_token) vars["eos_token"] = jinja::Value::string(*tok.eos_token);
  if (tok.pad_token) vars["pad_token"] = jinja::Value::string(*tok.pad_token);
  if (tok.unk_token) vars["unk_token"] = jinja::Value::string(*tok.unk_token);
  if (!tok.additional_special_tokens.empty()) {
    jinja::List l;
    for (const auto& s : tok.additional_special_tokens) l.push_back(jinja::Value::string(s));
    vars["additional_special_tokens"] = jinja::Value::list(std::move(l));
  }
  vars["raise_exception"] = raise_exception_fn();
  vars["strftime_now"] = strftime_now_fn();
  for (const auto& [k, v] : extra) vars[k] = v;
  return tmpl.render(vars);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& extra_vars) const {
  return render_value(*template_, tokens_, messages_value(messages), add_generation_prompt, extra_to_vars(extra_vars));
}

std::string ChatTemplate::render(const nlohmann::json& messages, bool add_generation_prompt,
                                 const nlohmann::json& extra_vars) const {
  return render_value(*template_, tokens_, messages_value(messages), add_generation_prompt, extra_to_vars(extra_vars));
}

// Assistant spans, found by rendering variants of the conversation (docs/chat-templates.md):
//  1. The text of assistant message k is where the full rendering T differs from renderings in
//     which message k is replaced by {"role": "assistant", "content": X} for two one-character X:
//     the common prefix and suffix of T and each variant bound it. This covers whatever the
//     template derives from the message (content after </think> stripping, trimming, reasoning,
//     tool calls) and works for templates that are not prefix-stable (Qwen3 rewrites earlier turns).
//  2. The span starts after the role header: the generation prompt the template writes after
//     messages[:k] (e.g. "<|im_start|>assistant\n"), or its longest leading part, found last in the
//     text between the previous span and the message text. Text between that header and the
//     message (Qwen3's "<think>\n") belongs to the span; with no generation prompt the span
//     starts at the message text.
//  3. The span ends after the message text plus the end-of-turn token that directly follows it.
template <typename Json>
static RenderedChat spans_impl(const jinja::Template& tmpl, const ChatSpecialTokens& tok, const Json& messages,
                               bool add_generation_prompt, const Json& extra_vars) {
  jinja::Value msgs = messages_value(messages);
  VarMap extra = extra_to_vars(extra_vars);
  RenderedChat out;
  out.text = render_value(tmpl, tok, msgs, add_generation_prompt, extra);
  const std::string& text = out.text;

  std::vector<std::string> ends;
  if (tok.eos_token && !tok.eos_token->empty()) ends.push_back(*tok.eos_token);
  for (const auto& m : end_of_turn_markers()) ends.push_back(m);
  std::vector<std::string> markers = family_markers();
  for (const auto& o : {tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token})
    if (o && !o->empty()) markers.push_back(*o);
  for (const auto& s : tok.additional_special_tokens)
    if (!s.empty()) markers.push_back(s);

  auto snap = [&](size_t x, bool forward) {
    for (const auto& m : markers) {
      size_t from = x >= m.size() ? x - m.size() + 1 : 0;
      size_t o = text.find(m, from);
      if (o != std::string::npos && o < x && x < o + m.size()) x = forward ? o + m.size() : o;
    }
    while (utf8_continuation(text, x)) x += forward ? 1 : static_cast<size_t>(-1);
    return x;
  };

  const jinja::List& items = msgs.items();
  size_t prev_end = 0;
  for (size_t k = 0; k < items.size(); ++k) {
    const jinja::Value& m = items[k];
    if (!m.is_dict()) continue;
    const jinja::Value* role = m.dict_ref().find("role");
    if (!role || !role->is_string() || role->str() != "assistant") continue;

    size_t lo = std::string::npos, hi = 0;
    bool rendered = false;
    for (const char* probe : {"\x01", "\x02"}) {
      jinja::List variant = items;
      auto d = std::make_shared<jinja::Dict>();
      d->entries = {{"role", jinja::Value::string("assistant")}, {"content", jinja::Value::string(probe)}};
      variant[k] = jinja::Value::dict(d);
      std::string t2;
      try {
        t2 = render_value(tmpl, tok, jinja::Value::list(std::move(variant)), add_generation_prompt, extra);
      } catch (const Error& e) {
        throw Error("cannot locate assistant message " + std::to_string(k) +
                    " in the rendered chat: the template fails when that message is replaced by plain text (" +
                    e.what() + ")");
      }
      if (t2 == text) continue;
      rendered = true;
      size_t p = common_prefix(text, t2);
      size_t s = common_suffix(text, t2, p);
      lo = std::min(lo, p);
      hi = std::max(hi, text.size() - s);
    }
    if (!rendered) continue;  // the template does not write this message at all
    if (hi < lo) hi = lo;
    lo = snap(lo, false);
    hi = snap(hi, true);
    if (lo < prev_end)
      throw Error("cannot locate assistant message " + std::to_string(k) +
                  " in the rendered chat: it overlaps the previous assistant turn");

    std::string header;
    try {
      jinja::Value head = jinja::Value::list(jinja::List(items.begin(), items.begin() + static_cast<long>(k)));
      std::string with = render_value(tmpl, tok, head, true, extra);
      std::string without = render_value(tmpl, tok, head, false, extra);
      if (with.size() > without.size() && with.compare(0, without.size(), without) == 0)
        header = with.substr(without.size());
    } catch (const Error&) {
      // A template that cannot render the first k messages on their own (e.g. one that requires a
      // user turn) has no usable generation prompt here; the span then starts at the message text.
    }
    size_t start = lo;
    if (!header.empty()) {
      std::string_view window(text.data() + prev_end, lo - prev_end);
      for (size_t j = header.size(); j > 0; --j) {
        if (utf8_continuation(header, j)) continue;
        if (j * 2 < header.size() && j < 12) break;  // too little of the header to trust a match
        size_t f = window.rfind(std::string_view(header).substr(0, j));
        if (f != std::string_view::npos) {
          start = prev_end + f + j;
          break;
        }
      }
    }
    size_t end = hi;
    for (const auto& e : ends) {
      if (text.compare(end, e.size(), e) == 0) {
        end += e.size();
        break;
      }
    }
    out.assistant_spans.emplace_back(start, end);
    prev_end = end;
  }
  return out;
}

RenderedChat ChatTemplate::render_with_spans(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                             const nlohmann::ordered_json& extra_vars) const {
  return spans_impl(*template_, tokens_, messages, add_generation_prompt, extra_vars);
}

RenderedChat ChatTemplate::render_with_spans(const nlohmann::json& messages, bool add_generation_prompt,
                                             const nlohmann::json& extra_vars) const {
  return spans_impl(*template_, tokens_, messages, add_generation_prompt, extra_vars);
}

// ---------------------------------------------------------------------------------------------

TokenizedChat tokenize_chat(const Tokenizer& tokenizer, const RenderedChat& chat, bool verify) {
  TokenizedChat out;
  size_t pos = 0;
  auto segment = [&](size_t b, size_t e, uint8_t train) {
    if (e <= b) return;
    std::vector<int32_t> ids = tokenizer.encode(std::string_view(chat.text).substr(b, e - b), false);
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.train_mask.insert(out.train_mask.end(), ids.size(), train);
  };
  for (const auto& [b, e] : chat.assistant_spans) {
    if (b < pos || e < b || e > chat.text.size())
      throw Error("assistant spans must be ordered, disjoint and inside the text (got [" + std::to_string(b) + ", " +
                  std::to_string(e) + ") after offset " + std::to_string(pos) + ")");
    segment(pos, b, 0);
    segment(b, e, 1);
    pos = e;
  }
  segment(pos, chat.text.size(), 0);
  if (verify) out.matches_full_encoding = tokenizer.encode(chat.text, false) == out.ids;
  return out;
}

nlohmann::ordered_json messages_from_record(const nlohmann::ordered_json& record) {
  using oj = nlohmann::ordered_json;
  if (!record.is_object()) throw Error("a chat record must be a JSON object");
  if (record.contains("messages")) {
    const oj& m = record["messages"];
    if (!m.is_array()) throw Error("the record's \"messages\" must be an array of {\"role\", \"content\"}");
    for (size_t i = 0; i < m.size(); ++i)
      if (!m[i].is_object() || !m[i].contains("role") || !m[i]["role"].is_string())
        throw Error("message " + std::to_string(i) + " of the record has no string \"role\"");
    return m;
  }
  if (record.contains("instruction") && record.contains("output")) {
    auto str = [&](const char* key) -> std::string {
      if (!record.contains(key) || record[key].is_null()) return "";
      if (!record[key].is_string()) throw Error(std::string("the record's \"") + key + "\" must be a string");
      return record[key].get<std::string>();
    };
    std::string instruction = str("instruction"), input = str("input"), output = str("output");
    oj msgs = oj::array();
    if (record.contains("system") && record["system"].is_string() && !record["system"].get<std::string>().empty())
      msgs.push_back({{"role", "system"}, {"content", record["system"]}});
    oj user = {{"role", "user"}, {"content", input.empty() ? instruction : instruction + "\n\n" + input},
               {"instruction", instruction}, {"input", input}};
    msgs.push_back(user);
    msgs.push_back({{"role", "assistant"}, {"content", output}});
    return msgs;
  }
  throw Error("a chat record needs \"messages\" or \"instruction\" + \"output\" (got keys: " + [&] {
    std::string k;
    for (auto it = record.begin(); it != record.end(); ++it) k += (k.empty() ? "" : ", ") + it.key();
    return k.empty() ? std::string("none") : k;
  }() + ")");
}

}  // namespace dsft::text
