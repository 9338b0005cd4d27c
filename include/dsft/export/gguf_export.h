// Export to llama.cpp's GGUF: a whole HF-format model directory (config.json + safetensors +
// tokenizer.json), a PEFT LoRA adapter as a GGUF adapter, and an Ollama Modelfile beside them.
// Everything is checked (config, every tensor's shape, the tokenizer) before the first byte is
// written; files are written atomically and never overwrite an existing file unless asked to.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dsft/io/gguf.h"

namespace dsft::exporter {

// Tensor encodings of the output. 1-D tensors (norms, biases, router bias, rope factors) and the
// MoE router stay f32 whatever is chosen; q8_0 applies to weights whose rows are a multiple of
// 32 values long, the others fall back to f16 (as llama.cpp's converter does).
enum class GgufOutType { f32, f16, bf16, q8_0 };
GgufOutType parse_gguf_out_type(const std::string& name);  // "f32", "f16", "bf16", "q8_0"
const char* gguf_out_type_name(GgufOutType type);

struct GgufExportOptions {
  std::string model_dir;            // config.json, *.safetensors, tokenizer.json, tokenizer_config.json
  std::string output_path;          // the .gguf file
  GgufOutType out_type = GgufOutType::f16;
  std::string name;                 // general.name; default: the model directory's name
  std::string tokenizer_dir;        // default: model_dir
  std::string tokenizer_pre;        // tokenizer.ggml.pre; default: detected from tokenizer.json
  bool overwrite = false;
  std::string modelfile_path;       // when set, an Ollama Modelfile is written there too
};

struct GgufExportReport {
  std::string path;
  std::string architecture;  // llama, qwen2, deepseek2
  std::string tokenizer_pre;
  size_t n_tensors = 0;
  size_t bytes = 0;
  std::vector<std::string> warnings;  // e.g. a deepseek2 shape llama.cpp will not load
};

GgufExportReport export_gguf(const GgufExportOptions& options);

// The llama.cpp architecture of a model_type: llama -> llama, qwen2 -> qwen2,
// deepseek_v2 / deepseek_v3 -> deepseek2. Throws dsft::Error for others.
std::string gguf_architecture(const std::string& model_type);

// Tokenizer metadata (tokenizer.ggml.*, tokenizer.chat_template) from a directory holding a
// byte-level BPE tokenizer.json (+ tokenizer_config.json). `vocab_size` is the model's embedding
// rows: the token list is padded to it with "[PAD<i>]" (type unused); a tokenizer with ids past
// it is refused. `config_json` (may be empty) supplies bos/eos ids the tokenizer config lacks.
struct VocabSummary {
  std::string pre;
  int64_t n_tokens = 0;
  std::optional<int64_t> bos, eos, pad;
  std::string family;  // chat format: "deepseek-v3", "chatml", "llama3", "deepseek-llm", "deepseek-coder", ""
};
VocabSummary add_tokenizer_metadata(io::GgufWriter& writer, const std::string& tokenizer_dir, int64_t vocab_size,
                                    const std::string& pre_override = "", const std::string& config_path = "");

// The tokenizer.ggml.pre name llama.cpp expects for a tokenizer.json, decided from its
// pre-tokenizer regexes (and, for the Qwen2 regex, whether the vocabulary is DeepSeek-R1's);
// throws dsft::Error when the pre-tokenizer is not one llama.cpp knows.
std::string detect_tokenizer_pre(const std::string& tokenizer_json_path);

// A PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) as a llama.cpp GGUF
// adapter: general.type "adapter", adapter.type "lora", adapter.lora.alpha, tensors
// "<gguf weight name>.lora_a" / ".lora_b". The base model's config.json gives the architecture
// and the shapes the adapter must fit.
struct GgufLoraExportOptions {
  std::string adapter_dir;
  std::string base_model_dir;
  std::string output_path;
  GgufOutType out_type = GgufOutType::f16;
  std::string name;
  bool overwrite = false;
};
GgufExportReport export_gguf_lora(const GgufLoraExportOptions& options);

// An Ollama Modelfile for a GGUF export: FROM, optional ADAPTER, a TEMPLATE in Go-template syntax
// for the chat family, and PARAMETER stop lines for its end-of-turn tokens.
struct ModelfileOptions {
  std::string gguf_file = "./model.gguf";  // as written after FROM (relative to the Modelfile)
  std::string adapter_file;                // optional ADAPTER line
  std::string family;                      // from VocabSummary::family
  std::string eos_token;                   // the tokenizer's eos text
  std::string system;                      // optional SYSTEM prompt
};
std::string render_modelfile(const ModelfileOptions& options);

}  // namespace dsft::exporter
