// `dsft tokenize --tokenizer DIR [--add-special-tokens] [--chat [--add-generation-prompt]]`:
// JSON lines {"text": ...} (or {"messages": [...]} with --chat) on stdin, {"ids": [...]} (with
// --chat also "rendered") on stdout, one line out per line in.
#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsft/cli/commands.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"

namespace dsft::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer_dir;
  bool add_special_tokens = false;
  bool chat = false;
  bool add_generation_prompt = false;
};

void append_ids(std::string& out, const std::vector<int32_t>& ids) {
  out += "{\"ids\": [";
  char buf[16];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ", ";
    auto r = std::to_chars(buf, buf + sizeof buf, ids[i]);
    out.append(buf, r.ptr);
  }
  out += "]";
}

void run_tokenize(const TokenizeArgs& a) {
  auto tok = text::load_tokenizer(a.tokenizer_dir);
  std::optional<text::ChatTemplate> tmpl;
  if (a.chat) tmpl = text::ChatTemplate::from_tokenizer_config(a.tokenizer_dir);

  std::ios::sync_with_stdio(false);
  // Lines go through in blocks so that encode_batch keeps every core busy on large inputs.
  constexpr size_t kBlock = 2048;
  std::vector<std::string> texts;
  std::vector<size_t> text_lines;  // input line number of each text
  std::string line, out;
  size_t line_no = 0;
  bool eof = false;
  while (!eof) {
    texts.clear();
    text_lines.clear();
    std::string error;
    while (texts.size() < kBlock) {
      if (!std::getline(std::cin, line)) {
        eof = true;
        break;
      }
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const std::string where = "stdin line " + std::to_string(line_no) + ": ";
      try {
        auto j = nlohmann::ordered_json::parse(line);
        if (!a.chat) {
          auto it = j.is_object() ? j.find("text") : j.end();
          if (it == j.end() || !it->is_string()) {
            error = where + "expected a JSON object with a string \"text\"";
            break;
          }
          texts.push_back(it->get<std::string>());
          text_lines.push_back(line_no);
        } else {
          auto it = j.is_object() ? j.find("messages") : j.end();
          if (it == j.end() || !it->is_array()) {
            error = where + "expected a JSON object with a \"messages\" array (--chat)";
            break;
          }
          nlohmann::ordered_json extra = nlohmann::ordered_json::object();
          if (auto tools = j.find("tools"); tools != j.end()) extra["tools"] = *tools;
          texts.push_back(tmpl->render(*it, a.add_generation_prompt, extra));
          text_lines.push_back(line_no);
        }
      } catch (const nlohmann::json::exception& e) {
        error = where + "not valid JSON (" + e.what() + ")";
        break;
      } catch (const Error& e) {
        error = where + e.what();
        break;
      }
    }
    // Lines before a bad one are still written.
    std::vector<std::vector<int32_t>> ids;
    try {
      ids = tok->encode_batch(texts, a.add_special_tokens);
    } catch (const Error&) {
      // Find the line that failed, for the message.
      for (size_t i = 0; i < texts.size(); ++i) {
        try {
          (void)tok->encode(texts[i], a.add_special_tokens);
        } catch (const Error& e) {
          throw Error("stdin line " + std::to_string(text_lines[i]) + ": " + e.what());
        }
      }
      throw;
    }
    out.clear();
    for (size_t i = 0; i < ids.size(); ++i) {
      append_ids(out, ids[i]);
      if (a.chat) out += ", \"rendered\": " + nlohmann::json(texts[i]).dump();
      out += "}\n";
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    if (!error.empty()) {
      std::fflush(stdout);
      throw Error(error);
    }
  }
  std::fflush(stdout);
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize",
      "Tokenize JSON lines from stdin: {\"text\": ...} -> {\"ids\": [...]}, one line out per line in.\n"
      "Added and special tokens written in the text are always matched; --add-special-tokens also applies\n"
      "the tokenizer's post-processor (BOS/EOS templates). With --chat, lines are {\"messages\": [...]}\n"
      "(optionally \"tools\") rendered with the directory's chat template, and the output also has \"rendered\".");
  cmd->add_option("--tokenizer", a->tokenizer_dir, "Directory with tokenizer.json or tokenizer.model")->required();
  cmd->add_flag("--add-special-tokens", a->add_special_tokens, "Apply the post-processor (e.g. prepend BOS)");
  auto* chat = cmd->add_flag("--chat", a->chat, "Input lines are chat conversations");
  cmd->add_flag("--add-generation-prompt", a->add_generation_prompt,
                "With --chat: end with the assistant header, as for generation")
      ->needs(chat);
  cmd->callback([a] { run_tokenize(*a); });
}

}  // namespace dsft::cli
