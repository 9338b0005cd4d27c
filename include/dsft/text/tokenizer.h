// The tokenizer interface: byte-level BPE from tokenizer.json and SentencePiece models behind one
// API, loaded from a model directory.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsft::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes UTF-8 text. Added/special tokens written literally in `text` are always matched;
  // `add_special_tokens` applies the post-processor (BOS/EOS templates) as HF tokenizers does.
  // Invalid UTF-8 throws dsft::Error.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const = 0;
  // Encodes many texts on every core; the result equals encode() per text.
  virtual std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                         bool add_special_tokens = false) const;
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;

  virtual int32_t vocab_size() const = 0;  // including added tokens
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;
  virtual bool is_special(int32_t id) const = 0;

  // From tokenizer_config.json (bos_token / eos_token / pad_token), where present.
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  std::optional<int32_t> pad_id;
  // tokenizer_config.json's add_bos_token where the post-processor itself adds no BOS
  // (DeepSeek-V3): the training data path prepends BOS then, as transformers does.
  bool add_bos_for_training = false;
};

// Loads the tokenizer of a model directory: tokenizer.json (byte-level BPE) if present, else
// tokenizer.model (SentencePiece); tokenizer_config.json supplies special-token names.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

// Loads one Hugging Face tokenizer.json file (no tokenizer_config.json is read).
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path);

}  // namespace dsft::text
