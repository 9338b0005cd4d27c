// Chat templates: a conversation ({"role", "content"} messages) rendered to the exact text a model
// was trained on, the byte spans of that text that are assistant output, and those spans carried
// through tokenisation as a per-token training mask. Templates are Jinja sources, either the
// `chat_template` of a model's tokenizer_config.json or a built-in family named in the training
// config; both run through the same interpreter (docs/chat-templates.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsft::text {

class Tokenizer;
namespace jinja {
class Template;
}

// Special-token strings a template sees as variables (bos_token, eos_token, ...), as
// tokenizer_config.json names them.
struct ChatSpecialTokens {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<std::string> unk_token;
  std::vector<std::string> additional_special_tokens;

  // Reads bos/eos/pad/unk_token (string or {"content": ...}) and additional_special_tokens.
  static ChatSpecialTokens from_tokenizer_config(const nlohmann::json& config);
};

// A rendered conversation. assistant_spans are [begin, end) byte offsets into `text`, in order and
// disjoint: each covers what the model must learn to produce for one assistant message (its
// content, reasoning and tool calls as the template writes them, and the end-of-turn token that
// follows), never the role header before it.
struct RenderedChat {
  std::string text;
  std::vector<std::pair<size_t, size_t>> assistant_spans;
};

// Token ids of a rendered chat with a mask: train_mask[i] is 1 where ids[i] belongs to an
// assistant span (a label to train on), 0 for prompt tokens.
struct TokenizedChat {
  std::vector<int32_t> ids;
  std::vector<uint8_t> train_mask;
  // Set when tokenize_chat was asked to verify: whether `ids` equals encode(text) in one piece.
  std::optional<bool> matches_full_encoding;
};

class ChatTemplate {
 public:
  // Parses `source`. Throws dsft::Error naming the construct if the template uses Jinja the
  // interpreter does not implement. `name` is used in messages; a source equal to a built-in is
  // recognised and takes its family name.
  static ChatTemplate from_source(const std::string& source, ChatSpecialTokens tokens,
                                  const std::string& name = "custom");
  // tokenizer_config.json (a file, or a model directory holding one): its chat_template (a string,
  // or a list of {"name", "template"} from which "default" is taken) and special tokens.
  static ChatTemplate from_tokenizer_config(const std::string& path);
  static ChatTemplate from_tokenizer_config(const nlohmann::json& config, const std::string& origin);
  // A built-in family: deepseek-v3, deepseek-r1 (also deepseek-r1-distill), deepseek-llm, qwen2,
  // chatml, llama3, alpaca. Special tokens default to the family's own.
  static ChatTemplate named(const std::string& name, std::optional<ChatSpecialTokens> tokens = std::nullopt);
  // What a training config asks for: a family name, or "" / "auto" for the model directory's own
  // template. With a name, the directory's tokenizer_config.json (if any) supplies the special
  // tokens.
  static ChatTemplate resolve(const std::string& name, const std::string& model_dir);

  static std::vector<std::string> builtin_names();
  // The Jinja source of a built-in family; throws dsft::Error for an unknown name.
  static std::string builtin_source(const std::string& name);

  // The family name ("deepseek-v3", ...) when the source is a built-in one, else the name given.
  const std::string& name() const { return name_; }
  const std::string& source() const { return source_; }
  const ChatSpecialTokens& special_tokens() const { return tokens_; }

  // Renders as transformers' apply_chat_template(tokenize=False) does: `messages`, `tools` (from
  // extra_vars, else none), `documents` (none), add_generation_prompt, the special tokens, and
  // every key of `extra_vars` (template kwargs such as enable_thinking) as variables.
  // ordered_json keeps object keys in their given order, as Python dicts do (visible through
  // tojson); nlohmann::json sorts them.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt = false,
                     const nlohmann::ordered_json& extra_vars = nlohmann::ordered_json::object()) const;
  std::string render(const nlohmann::json& messages, bool add_generation_prompt = false,
                     const nlohmann::json& extra_vars = nlohmann::json::object()) const;

  // render() plus the assistant spans (method: docs/chat-templates.md, "Assistant spans").
  RenderedChat render_with_spans(const nlohmann::ordered_json& messages, bool add_generation_prompt = false,
                                 const nlohmann::ordered_json& extra_vars = nlohmann::ordered_json::object()) const;
  RenderedChat render_with_spans(const nlohmann::json& messages, bool add_generation_prompt = false,
                                 const nlohmann::json& extra_vars = nlohmann::json::object()) const;

 private:
  ChatTemplate() = default;
  std::string name_;
  std::string source_;
  ChatSpecialTokens tokens_;
  std::shared_ptr<const jinja::Template> template_;
};

// Tokenises a rendered chat segment by segment (prompt text, assistant span, prompt text, ...)
// without adding special tokens, so that no token straddles a span boundary, and marks the span
// tokens. With `verify`, also encodes the whole text and records whether the ids are equal (they
// are when every boundary falls next to a special token, as in all built-in templates).
TokenizedChat tokenize_chat(const Tokenizer& tokenizer, const RenderedChat& chat, bool verify = false);

// The messages of a dataset record: {"messages": [...]} as given; {"instruction", "input",
// "output"} (Alpaca) as a user turn (instruction, then a blank line and the input when non-empty,
// with "instruction" and "input" kept as extra keys for the alpaca template) and an assistant
// turn; a "system" string field becomes a leading system message. Throws dsft::Error otherwise.
nlohmann::ordered_json messages_from_record(const nlohmann::ordered_json& record);

}  // namespace dsft::text
