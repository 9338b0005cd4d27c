// Tokenizer metadata for GGUF: tokens, token types, merges, special ids, add_bos/eos, the chat
// template, and the pre-tokenizer name llama.cpp dispatches on, from a byte-level BPE
// tokenizer.json and tokenizer_config.json (what llama.cpp's converter derives from them).
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "dsft/export/gguf_export.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace dsft::exporter {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// llama.cpp's token types (llama_token_type).
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

json read_json(const std::string& path, const std::string& what) {
  const std::string text = util::read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(what + " " + path + " is not valid JSON: " + e.what());
  }
}

// Split regexes of a pre_tokenizer (a Split, or a Sequence of them), in order.
void collect_regexes(const json& pre, std::vector<std::string>& out, bool& byte_level) {
  if (!pre.is_object()) return;
  const std::string type = pre.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : pre.value("pretokenizers", json::array())) collect_regexes(p, out, byte_level);
  } else if (type == "Split") {
    const json& pat = pre.value("pattern", json::object());
    if (pat.contains("Regex")) out.push_back(pat["Regex"].get<std::string>());
    else if (pat.contains("String")) out.push_back(pat["String"].get<std::string>());
  } else if (type == "ByteLevel") {
    byte_level = true;
    if (pre.value("use_regex", true)) out.push_back("<gpt2>");
  }
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A token the converter treats as control even when tokenizer.json does not mark it special
// (llama.cpp's does_token_look_special).
bool looks_special(const std::string& t) {
  auto starts = [&](const std::string& p) { return t.compare(0, p.size(), p) == 0; };
  auto ends = [&](const std::string& p) { return t.size() >= p.size() && t.compare(t.size() - p.size(), p.size(), p) == 0; };
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (starts("<|") && ends("|>")) return true;
  if (starts("<\xEF\xBD\x9C") && ends("\xEF\xBD\x9C>")) return true;  // <｜ ... ｜> (DeepSeek)
  return starts("<unused") && ends(">");
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

// tokenizer_config.json's bos_token & co.: a string or an AddedToken object.
std::optional<std::string> token_text(const json& cfg, const std::string& key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

std::string pre_from_regexes(const std::vector<std::string>& rx, bool r1_vocab) {
  auto any = [&](const std::string& part) {
    for (const auto& r : rx)
      if (contains(r, part)) return true;
    return false;
  };
  // DeepSeek-V3/R1: digits in runs of 1-3, CJK/kana runs, then a GPT-style pattern.
  if (any("\\p{N}{1,3}") && any("[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F"))  // [一-龥぀-ゟ
    return "deepseek-v3";
  // Llama 3 and Qwen2 share a pattern except for digit runs (1-3 vs single digits).
  const bool gpt4_style = any("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+");
  if (gpt4_style && any("\\p{N}{1,3}")) return "llama-bpe";
  if (gpt4_style && any("|\\p{N}|")) return r1_vocab ? "deepseek-r1-qwen" : "qwen2";
  // DeepSeek LLM (7B/67B) and Coder: sequences of Split rules.
  if (any("\\s?[A-Za-z\xC2\xB5")) return "deepseek-llm";  // \s?[A-Za-zµ...
  if (any("\\s?\\p{L}+") && any("\\s?\\p{P}+")) return "deepseek-coder";
  // A plain ByteLevel pre-tokenizer with GPT-2's own pattern.
  if (rx.size() == 1 && rx[0] == "<gpt2>") return "gpt-2";
  return "";
}

const char* kKnownPre = "deepseek-v3, deepseek-r1-qwen, qwen2, llama-bpe, deepseek-llm, deepseek-coder, gpt-2";

}  // namespace

std::string detect_tokenizer_pre(const std::string& tokenizer_json_path) {
  const json tok = read_json(tokenizer_json_path, "tokenizer");
  std::vector<std::string> rx;
  bool byte_level = false;
  collect_regexes(tok.value("pre_tokenizer", json()), rx, byte_level);
  bool r1 = false;
  for (const auto& a : tok.value("added_tokens", json::array()))
    if (a.value("content", "") == "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>") r1 = true;
  const std::string pre = pre_from_regexes(rx, r1);
  if (pre.empty())
    throw Error("cannot tell which llama.cpp pre-tokenizer matches " + tokenizer_json_path +
                " (its pre_tokenizer regexes are not one of DeepSeek V3, Qwen2, Llama 3, DeepSeek LLM or Coder); "
                "pass the name explicitly (one of " + kKnownPre + ")");
  return pre;
}

VocabSummary add_tokenizer_metadata(io::GgufWriter& w, const std::string& dir, int64_t vocab_size,
                                    const std::string& pre_override, const std::string& config_path) {
  const fs::path tok_path = fs::path(dir) / "tokenizer.json";
  if (!fs::exists(tok_path))
    throw Error("no tokenizer.json in " + dir + ": a GGUF export needs the model's byte-level BPE tokenizer "
                "(copy tokenizer.json and tokenizer_config.json from the base model)");
  const json tok = read_json(tok_path.string(), "tokenizer");
  const json model = tok.value("model", json::object());
  if (!model.is_object()) throw Error(tok_path.string() + " has no model object");
  if (model.value("type", "") != "BPE")
    throw Error(tok_path.string() + " holds a " + model.value("type", std::string("untyped")) +
                " model; GGUF export supports byte-level BPE tokenizers only");
  std::vector<std::string> rx;
  bool byte_level = false;
  collect_regexes(tok.value("pre_tokenizer", json()), rx, byte_level);
  const json decoder = tok.value("decoder", json::object());
  if (!byte_level && !(decoder.is_object() && decoder.value("type", "") == "ByteLevel"))
    throw Error(tok_path.string() + " is not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer or decoder); "
                "llama.cpp's \"gpt2\" tokenizer model needs one");

  json cfg = json::object();
  const fs::path cfg_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(cfg_path)) cfg = read_json(cfg_path.string(), "tokenizer config");

  // id -> text: the BPE vocabulary, then the added tokens (which win where both name an id).
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  std::vector<int32_t> types(static_cast<size_t>(vocab_size), kUnused);
  std::vector<bool> have(static_cast<size_t>(vocab_size), false);
  std::map<std::string, int64_t> ids;
  auto place = [&](int64_t id, const std::string& text, int32_t type) {
    if (id < 0 || id >= vocab_size)
      throw Error(tok_path.string() + " has token '" + text + "' with id " + std::to_string(id) +
                  ", outside the model's vocabulary of " + std::to_string(vocab_size) +
                  " (config.json vocab_size): tokenizer and model do not belong together");
    tokens[id] = text;
    types[id] = type;
    have[id] = true;
    ids[text] = id;
  };
  const json vocab = model.value("vocab", json::object());
  if (!vocab.is_object()) throw Error(tok_path.string() + " has no model.vocab object");
  for (const auto& [text, id] : vocab.items()) {
    if (!id.is_number_integer()) throw Error(tok_path.string() + " gives token '" + text + "' a non-integer id");
    place(id.get<int64_t>(), text, kNormal);
  }
  for (const auto& a : tok.value("added_tokens", json::array())) {
    std::string text = a.value("content", "");
    const bool special = a.value("special", false);
    int32_t type = kControl;
    if (!special && !looks_special(text)) {
      // The converter's pre-normalisation of user-defined tokens: SentencePiece's ▁ is a space.
      text = replace_all(text, "\xE2\x96\x81", " ");
      type = kUserDefined;
    }
    place(a.value("id", int64_t{-1}), text, type);
  }
  int64_t n_real = 0;
  for (int64_t i = 0; i < vocab_size; ++i) {
    if (have[i]) {
      ++n_real;
      continue;
    }
    tokens[i] = "[PAD" + std::to_string(i) + "]";
  }
  if (n_real == 0) throw Error(tok_path.string() + " has an empty vocabulary");

  std::vector<std::string> merges;
  for (const auto& m : model.value("merges", json::array())) {
    if (m.is_string()) merges.push_back(m.get<std::string>());
    else if (m.is_array() && m.size() == 2) merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    else throw Error(tok_path.string() + " has a merge that is neither \"a b\" nor [a, b]: " + m.dump());
  }

  VocabSummary sum;
  if (!pre_override.empty()) {
    sum.pre = pre_override;
  } else {
    bool r1 = false;
    for (const auto& a : tok.value("added_tokens", json::array()))
      if (a.value("content", "") == "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>") r1 = true;
    sum.pre = pre_from_regexes(rx, r1);
    if (sum.pre.empty())
      throw Error("cannot tell which llama.cpp pre-tokenizer matches " + tok_path.string() +
                  "; pass it explicitly (one of " + kKnownPre + ")");
  }
  sum.n_tokens = vocab_size;

  w.set("tokenizer.ggml.model", io::GgufValue::string("gpt2"));
  w.set("tokenizer.ggml.pre", io::GgufValue::string(sum.pre));
  w.set("tokenizer.ggml.tokens", io::GgufValue::strings(tokens));
  w.set("tokenizer.ggml.token_type", io::GgufValue::i32s(types));
  w.set("tokenizer.ggml.merges", io::GgufValue::strings(merges));

  // Special ids: tokenizer_config.json names them; config.json's ids fill what it leaves out.
  json config = json::object();
  if (!config_path.empty() && fs::exists(config_path)) config = read_json(config_path, "model config");
  auto id_of = [&](const std::string& key) -> std::optional<int64_t> {
    if (auto text = token_text(cfg, key + "_token")) {
      auto it = ids.find(*text);
      if (it == ids.end())
        throw Error(cfg_path.string() + " names " + key + "_token '" + *text + "', which " + tok_path.string() +
                    " does not have");
      return it->second;
    }
    auto c = config.find(key + "_token_id");
    if (c != config.end()) {
      if (c->is_number_integer()) return c->get<int64_t>();
      if (c->is_array() && !c->empty() && (*c)[0].is_number_integer()) return (*c)[0].get<int64_t>();
    }
    return std::nullopt;
  };
  sum.bos = id_of("bos");
  sum.eos = id_of("eos");
  sum.pad = id_of("pad");
  const auto unk = id_of("unk");
  auto set_id = [&](const char* key, const std::optional<int64_t>& id) {
    if (!id) return;
    if (*id < 0 || *id >= vocab_size)
      throw Error(std::string("special token id ") + std::to_string(*id) + " (" + key +
                  ") is outside the vocabulary of " + std::to_string(vocab_size));
    w.set(key, io::GgufValue::u32(static_cast<uint32_t>(*id)));
  };
  set_id("tokenizer.ggml.bos_token_id", sum.bos);
  set_id("tokenizer.ggml.eos_token_id", sum.eos);
  set_id("tokenizer.ggml.padding_token_id", sum.pad);
  set_id("tokenizer.ggml.unknown_token_id", unk);

  // add_bos/add_eos: tokenizer_config.json, else what the post-processor template adds.
  std::optional<bool> add_bos, add_eos;
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) add_bos = cfg["add_bos_token"].get<bool>();
  if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) add_eos = cfg["add_eos_token"].get<bool>();
  json post = tok.value("post_processor", json::object());
  if (!post.is_object()) post = json::object();
  auto template_adds = [&](const json& p, bool& bos, bool& eos) {
    if (!p.is_object() || p.value("type", "") != "TemplateProcessing") return false;
    const json& single = p.value("single", json::array());
    bos = !single.empty() && single.front().contains("SpecialToken");
    eos = single.size() > 1 && single.back().contains("SpecialToken");
    return true;
  };
  bool t_bos = false, t_eos = false;
  bool templ = template_adds(post, t_bos, t_eos);
  if (!templ && post.value("type", "") == "Sequence")
    for (const auto& p : post.value("processors", json::array()))
      if ((templ = template_adds(p, t_bos, t_eos))) break;
  if (!add_bos && templ) add_bos = t_bos;
  if (!add_eos && templ) add_eos = t_eos;
  if (add_bos) w.set("tokenizer.ggml.add_bos_token", io::GgufValue::boolean(*add_bos));
  if (add_eos) w.set("tokenizer.ggml.add_eos_token", io::GgufValue::boolean(*add_eos));

  // Chat template: tokenizer_config.json (a string, or named templates), else chat_template.jinja.
  std::string chat;
  if (cfg.contains("chat_template")) {
    const json& ct = cfg["chat_template"];
    if (ct.is_string()) chat = ct.get<std::string>();
    else if (ct.is_array())
      for (const auto& t : ct)
        if (t.value("name", "") == "default") chat = t.value("template", "");
  }
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  if (chat.empty() && fs::exists(jinja)) chat = util::read_file(jinja.string());
  if (!chat.empty()) w.set("tokenizer.chat_template", io::GgufValue::string(chat));

  // The chat family (for the Modelfile) from the tokens the formats use.
  if (ids.count("<\xEF\xBD\x9C" "User\xEF\xBD\x9C>")) sum.family = "deepseek-v3";
  else if (ids.count("<|im_start|>")) sum.family = "chatml";
  else if (ids.count("<|start_header_id|>")) sum.family = "llama3";
  else if (sum.pre == "deepseek-coder") sum.family = "deepseek-coder";
  else if (sum.pre == "deepseek-llm") sum.family = "deepseek-llm";
  return sum;
}

}  // namespace dsft::exporter
