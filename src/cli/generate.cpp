// `dsft generate --model DIR [--adapter DIR] --prompt TEXT [--chat] ...`: loads a model (and a
// LoRA adapter), encodes the prompt (or renders it as one user turn of the chat template) and
// prints the continuation token by token, then a one-line timing summary at log level info.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsft/cli/commands.h"
#include "dsft/model/generate.h"
#include "dsft/model/load.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"
#include "dsft/util/log.h"

namespace dsft::cli {
namespace {

struct GenerateArgs {
  std::string model_dir;
  std::string adapter_dir;
  std::string prompt;
  bool chat = false;
  int64_t max_new_tokens = 128;
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::string dtype = "float32";
  std::string device = "cpu";
};

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence still waiting
// for continuation bytes, or in U+FFFD (what decoders emit for such bytes): those may change
// into a real character once the next token arrives.
size_t complete_prefix(const std::string& s) {
  size_t n = s.size();
  static const std::string kReplacement = "\xEF\xBF\xBD";
  if (n >= 3 && s.compare(n - 3, 3, kReplacement) == 0) return n - 3;
  // Walk back over at most 3 continuation bytes to the lead byte.
  size_t i = n;
  int cont = 0;
  while (i > 0 && cont < 3 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++cont;
  }
  if (i == 0) return n;
  const auto lead = static_cast<unsigned char>(s[i - 1]);
  int need = 0;
  if ((lead & 0xE0) == 0xC0) need = 1;
  else if ((lead & 0xF0) == 0xE0) need = 2;
  else if ((lead & 0xF8) == 0xF0) need = 3;
  else return n;  // ASCII or a stray byte: nothing to wait for
  return cont < need ? i - 1 : n;
}

// Prints decoded text as tokens arrive: the whole continuation is decoded each time (pieces
// alone do not decode correctly across token boundaries) and only the new suffix is written.
class StreamPrinter {
 public:
  explicit StreamPrinter(const text::Tokenizer& tok) : tok_(tok) {}
  void add(int64_t id) {
    ids_.push_back(static_cast<int32_t>(id));
    emit(false);
  }
  void finish() { emit(true); }

 private:
  void emit(bool final) {
    const std::string text = tok_.decode(ids_, /*skip_special_tokens=*/true);
    const size_t end = final ? text.size() : complete_prefix(text);
    if (end > printed_) {
      std::fwrite(text.data() + printed_, 1, end - printed_, stdout);
      std::fflush(stdout);
      printed_ = end;
    }
  }
  const text::Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;
};

void run_generate(const GenerateArgs& a) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(a.model_dir))
    throw Error("model directory " + a.model_dir + " does not exist (expected config.json, weights and a tokenizer)");
  if (!fs::exists(fs::path(a.model_dir) / "config.json"))
    throw Error("model directory " + a.model_dir + " has no config.json");
  auto tok = text::load_tokenizer(a.model_dir);

  std::vector<int32_t> ids32;
  if (a.chat) {
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    messages.push_back({{"role", "user"}, {"content", a.prompt}});
    const std::string rendered = text::ChatTemplate::resolve("", a.model_dir).render(messages, true);
    ids32 = tok->encode(rendered, /*add_special_tokens=*/false);  // the template writes BOS
  } else {
    ids32 = tok->encode(a.prompt, /*add_special_tokens=*/true);
    if (tok->add_bos_for_training && tok->bos_id && (ids32.empty() || ids32.front() != *tok->bos_id))
      ids32.insert(ids32.begin(), *tok->bos_id);
  }
  if (ids32.empty())
    throw Error("the prompt encodes to no tokens and the tokenizer adds no BOS: give a non-empty --prompt");
  const std::vector<int64_t> prompt(ids32.begin(), ids32.end());

  model::LoadOptions lo;
  lo.dtype = model::parse_torch_dtype(a.dtype);
  try {
    lo.device = torch::Device(a.device);
  } catch (const std::exception&) {
    throw UsageError("--device " + a.device + " is not a device: use cpu, cuda or cuda:N");
  }
  if (lo.device.is_cuda() && !torch::cuda::is_available())
    throw Error("--device " + a.device + " asks for a GPU but none is available; use --device cpu");
  auto lm = model::load_model(a.model_dir, lo);
  if (!a.adapter_dir.empty()) {
    auto info = peft::load_adapter(*lm, a.adapter_dir);
    util::log_info("adapter " + a.adapter_dir + ": LoRA on " + std::to_string(info.modules.size()) + " layers");
  }

  model::GenerateOptions go;
  go.max_new_tokens = a.max_new_tokens;
  go.temperature = a.temperature;
  go.top_k = a.top_k;
  go.top_p = a.top_p;
  go.seed = a.seed;
  go.stop_ids = lm->config().eos_token_ids;
  if (tok->eos_id) go.stop_ids.push_back(*tok->eos_id);

  StreamPrinter printer(*tok);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  clock::time_point t_first;
  int64_t count = 0;
  auto tokens = model::generate(*lm, prompt, go, [&](int64_t id) {
    if (count++ == 0) t_first = clock::now();
    printer.add(id);
  });
  const auto t_end = clock::now();
  printer.finish();
  std::fputc('\n', stdout);
  std::fflush(stdout);

  auto seconds = [](clock::duration d) { return std::chrono::duration<double>(d).count(); };
  char line[256];
  if (tokens.empty()) {
    std::snprintf(line, sizeof line, "prompt %zu tokens, no new tokens (%.3f s)", prompt.size(), seconds(t_end - t0));
  } else {
    const double decode_s = seconds(t_end - t_first);
    const double rate = tokens.size() > 1 && decode_s > 0 ? static_cast<double>(tokens.size() - 1) / decode_s : 0.0;
    std::snprintf(line, sizeof line, "prompt %zu tokens, %zu new tokens, first token after %.3f s, decode %.1f tokens/s",
                  prompt.size(), tokens.size(), seconds(t_first - t0), rate);
  }
  util::log_info(line);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate",
                                     "Generate text from a prompt with a model (and optionally a LoRA adapter).\n"
                                     "Greedy by default; --temperature > 0 samples (then --top-k, --top-p), "
                                     "reproducibly for a given --seed.");
  cmd->add_option("--model", a->model_dir, "Model directory (config.json, *.safetensors, tokenizer)")->required();
  cmd->add_option("--adapter", a->adapter_dir, "LoRA adapter directory (adapter_config.json + adapter_model.safetensors)");
  cmd->add_option("--prompt", a->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", a->chat, "Render the prompt as one user message with the model's chat template");
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "Most tokens to generate")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", a->temperature, "0: greedy; > 0: sampling temperature")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a->top_k, "Sample among the k most likely tokens (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling: smallest set of tokens with this total probability")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "Compute dtype: float32 or bfloat16")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "fp32", "bfloat16", "bf16"}));
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->callback([a] {
    if (a->top_p <= 0.0) throw UsageError("--top-p must be greater than 0");
    run_generate(*a);
  });
}

}  // namespace dsft::cli
