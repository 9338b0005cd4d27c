// SentencePiece models (tokenizer.model) behind the Tokenizer interface, and training a small
// model from a dataset for a new random model directory (`dsft init`).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dsft/text/tokenizer.h"

namespace dsft::text {

// Loads a SentencePiece model. Control pieces (<s>, </s>, <pad>), <unk> and user-defined pieces
// written literally in the text are matched as single tokens before the rest goes through
// SentencePiece, as transformers' Llama tokenizer does; byte-fallback pieces decode to their
// bytes. bos_id / eos_id / pad_id are the model's own (load_tokenizer may override them from
// tokenizer_config.json). encode(text, add_special_tokens=true) prepends BOS. Throws dsft::Error
// naming the file if it is missing or not a SentencePiece model.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path);

struct SentencePieceTrainOptions {
  // JSON Lines; each record contributes its "text", its "instruction"/"input"/"output", or the
  // "content" strings of its "messages". Other records are skipped and counted in the log.
  std::string input_jsonl;
  // Receives tokenizer.model and tokenizer_config.json (created with mode 0700 if missing).
  std::string output_dir;
  int vocab_size = 8000;  // including the special pieces and 256 byte-fallback pieces
  std::string model_type = "bpe";  // "bpe" or "unigram"
  // A built-in chat template family (ChatTemplate::builtin_names()): its bos/eos strings become
  // the model's control pieces, its role markers user-defined pieces, and its source the
  // chat_template of tokenizer_config.json.
  std::string chat_template = "chatml";
  // More pieces that must stay whole (kept in this order after the template's markers).
  std::vector<std::string> user_defined_symbols;
  double character_coverage = 0.9995;
  // Sentences beyond this many are ignored (the first ones are kept, in file order); 0 = all.
  int64_t max_sentences = 2'000'000;
  uint32_t seed = 1234;
};

// Trains deterministically (fixed seed, one thread, no input shuffling): the same options and
// input give byte-identical files. Throws dsft::Error for a missing or unreadable input, a corpus
// with no usable text, an unknown model type or template, or a vocabulary too small or too large
// for the corpus (with the size SentencePiece would accept where it says so).
void train_sentencepiece(const SentencePieceTrainOptions& opts);

}  // namespace dsft::text
