// run_export: checks every input, then builds OUT in a private staging folder beside it (mode
// 0700, files 0600, each synced), and renames the folder into place as the last step, so a
// failure or a crash never leaves a partial OUT (at most a hidden ".<OUT>.tmp-*" folder after a
// kill). The GGUF export lays out OUT as <name>.gguf (the merged model), <name>-lora.gguf (the
// adapter, where llama.cpp can apply it) and an Ollama Modelfile.
#include "dsft/export/export.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsft/text/chat_template.h"
#include "dsft/train/checkpoints.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "dsft/util/strings.h"
#include "export/export_internal.h"

namespace dsft::exporter {

namespace fs = std::filesystem;

ExportFormat parse_export_format(const std::string& name) {
  if (name == "hf") return ExportFormat::hf;
  if (name == "peft") return ExportFormat::peft;
  if (name == "gguf") return ExportFormat::gguf;
  throw UsageError("unknown export format '" + name + "' (expected hf, peft or gguf)");
}

const char* export_format_name(ExportFormat format) {
  switch (format) {
    case ExportFormat::hf:
      return "hf";
    case ExportFormat::peft:
      return "peft";
    case ExportFormat::gguf:
      return "gguf";
  }
  return "?";
}

size_t parse_size(const std::string& text) {
  const std::string t = util::trim(text);
  size_t digits = 0;
  while (digits < t.size() && (std::isdigit(static_cast<unsigned char>(t[digits])) || t[digits] == '.'))
    ++digits;
  std::string unit = util::trim(t.substr(digits));
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
  const std::vector<std::pair<std::string, double>> units = {
      {"", 1},      {"b", 1},        {"kb", 1e3},        {"mb", 1e6},           {"gb", 1e9},
      {"tb", 1e12}, {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  double value = -1;
  if (digits > 0) {
    try {
      value = std::stod(t.substr(0, digits));
    } catch (const std::exception&) {
      value = -1;
    }
  }
  for (const auto& [name, scale] : units)
    if (unit == name && value > 0) {
      const double bytes = value * scale;
      if (bytes >= 1) return static_cast<size_t>(bytes);
    }
  throw Error("size '" + text + "' is not a positive size (examples: 5GB, 500MB, 2GiB, 1000000)");
}

namespace {

// The staging folder: created beside OUT (same filesystem, so the final rename is atomic) and
// removed again unless published.
class Staging {
 public:
  explicit Staging(const fs::path& out) : out_(out) {
    util::make_private_dir(out.parent_path().string());
    std::string tmpl = (out.parent_path() / ("." + out.filename().string() + ".tmp-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data()))
      throw Error("cannot create a folder beside " + out.string() + ": " + std::strerror(errno));
    dir_ = tmpl;
  }
  ~Staging() {
    if (dir_.empty()) return;
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  const std::string& dir() const { return dir_; }

  // Syncs the folder and renames it to OUT; with `replace`, an existing OUT is moved aside first
  // and removed once the new one is in place.
  void publish(bool replace) {
    sync_dir(dir_);
    std::string old;
    if (replace && fs::exists(out_)) {
      std::string tmpl = (out_.parent_path() / ("." + out_.filename().string() + ".old-XXXXXX")).string();
      if (!::mkdtemp(tmpl.data()))
        throw Error("cannot create a folder beside " + out_.string() + ": " + std::strerror(errno));
      ::rmdir(tmpl.c_str());
      if (::rename(out_.c_str(), tmpl.c_str()) != 0)
        throw Error("cannot move the existing " + out_.string() + " aside: " + std::strerror(errno));
      old = tmpl;
    }
    // RENAME_NOREPLACE: an OUT that appeared meanwhile (another export) is never replaced silently.
    if (::renameat2(AT_FDCWD, dir_.c_str(), AT_FDCWD, out_.c_str(), RENAME_NOREPLACE) != 0) {
      const int err = errno;
      if (!old.empty()) ::rename(old.c_str(), out_.c_str());
      throw Error("cannot rename the finished export to " + out_.string() + ": " + std::strerror(err));
    }
    dir_.clear();
    sync_dir(out_.parent_path().string());
    if (!old.empty()) {
      std::error_code ec;
      fs::remove_all(old, ec);
    }
  }

 private:
  static void sync_dir(const std::string& path) {
    const int fd = ::open(path.empty() ? "." : path.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }
  fs::path out_;
  std::string dir_;
};

void check_output(const fs::path& out, bool force) {
  if (out.empty()) throw Error("no output path given (-o OUT)");
  if (fs::exists(out) && !force)
    throw Error("output " + out.string() + " exists; pass --force to replace it");
  if (fs::exists(out) && !fs::is_directory(out))
    throw Error("output " + out.string() + " exists and is not a directory; remove it or choose another OUT");
  // Missing folders above OUT are created (0700) when the export is written; the nearest one
  // that exists must be a folder.
  fs::path above = out.parent_path();
  while (!above.empty() && !fs::exists(above)) above = above.parent_path();
  if (!above.empty() && !fs::is_directory(above))
    throw Error("cannot put the output under " + above.string() + ": it is not a folder");
}

// The Modelfile family of a built-in chat template ("" for formats Ollama gets no template for).
std::string modelfile_family(const std::string& chat_template) {
  if (util::starts_with(chat_template, "deepseek-v3") || util::starts_with(chat_template, "deepseek-r1"))
    return "deepseek-v3";
  if (chat_template == "qwen2" || chat_template == "chatml") return "chatml";
  if (chat_template == "llama3") return "llama3";
  if (chat_template == "deepseek-llm") return "deepseek-llm";
  return "";
}

// The end-of-sequence text: the tokenizer's own, else the template family's.
std::string eos_token_text(const std::string& model_dir, const std::string& chat_template) {
  const fs::path p = fs::path(model_dir) / "tokenizer_config.json";
  if (fs::is_regular_file(p)) {
    const auto j = nlohmann::json::parse(util::read_file(p.string()), nullptr, false);
    const auto t =
        text::ChatSpecialTokens::from_tokenizer_config(j.is_object() ? j : nlohmann::json::object());
    if (t.eos_token) return *t.eos_token;
  }
  const auto t = text::ChatTemplate::named(chat_template).special_tokens();
  return t.eos_token.value_or("");
}

// The GGUF folder. The merged model goes through a scratch HF checkpoint inside the staging
// folder (removed before publishing), so that export_gguf sees exactly what `--format hf` writes.
void write_gguf(const detail::CheckedInputs& in, const ExportOptions& o, const std::string& dir,
                const std::string& name, ExportReport& report) {
  const std::string model_file = name + ".gguf", lora_file = name + "-lora.gguf";
  if (!o.lora_only) {
    std::string source = in.model_dir;
    const std::string scratch = dir + "/.merged";
    if (!in.adapter_dir.empty() || !in.chat_template.empty()) {
      util::make_private_dir(scratch);
      detail::HfWriteOptions ho;
      ho.dtype = o.gguf_type == GgufOutType::f32 ? "float32" : "";
      const auto r = detail::write_hf(in, ho, scratch);
      report.merged_layers = r.merged_layers;
      source = scratch;
    }
    GgufExportOptions go;
    go.model_dir = source;
    go.output_path = dir + "/" + model_file;
    go.out_type = o.gguf_type;
    go.name = name;
    go.modelfile_path = dir + "/Modelfile";
    const GgufExportReport gr = export_gguf(go);
    report.warnings.insert(report.warnings.end(), gr.warnings.begin(), gr.warnings.end());
    if (source == scratch) fs::remove_all(scratch);
    if (!in.chat_template.empty()) {
      // The run trained with a named template: the Modelfile speaks that format, not the one
      // the vocabulary suggests.
      ModelfileOptions m;
      m.gguf_file = "./" + model_file;
      m.family = modelfile_family(in.chat_template);
      m.eos_token = eos_token_text(in.model_dir, in.chat_template);
      util::write_file_atomic(dir + "/Modelfile", render_modelfile(m));
    }
  }
  if (in.adapter_dir.empty()) return;
  GgufLoraExportOptions lo;
  lo.adapter_dir = in.adapter_dir;
  lo.base_model_dir = in.model_dir;
  lo.output_path = dir + "/" + lora_file;
  lo.out_type = o.gguf_type == GgufOutType::q8_0 ? GgufOutType::f16 : o.gguf_type;
  lo.name = name + "-lora";
  if (o.lora_only) {
    export_gguf_lora(lo);
    return;
  }
  // Beside a merged model the LoRA file is a convenience: an adapter llama.cpp cannot apply
  // (MLA's kv_b_proj, stacked experts, per-module ranks) is left out with a warning.
  try {
    export_gguf_lora(lo);
  } catch (const Error& e) {
    std::error_code ec;
    fs::remove(lo.output_path, ec);
    report.warnings.push_back(std::string("no ") + lora_file + " (the merged " + model_file +
                              " has the adapter): " + e.what());
  }
}

}  // namespace

ExportReport run_export(const ExportOptions& o) {
  if (o.model_dir.empty()) throw UsageError("--model is required");
  if (o.format == ExportFormat::peft && o.adapter_dir.empty())
    throw UsageError("--format peft exports an adapter: give it with --adapter DIR");
  if (o.lora_only && o.format != ExportFormat::gguf)
    throw UsageError("--lora-only applies to --format gguf only");
  if (o.lora_only && o.adapter_dir.empty()) throw UsageError("--lora-only needs an adapter (--adapter DIR)");
  if (o.max_shard_bytes == 0) throw UsageError("--max-shard-size must be positive");
  const fs::path out = fs::absolute(o.output).lexically_normal();
  check_output(out.filename().empty() ? out.parent_path() : out, o.force);
  const fs::path out_dir = out.filename().empty() ? out.parent_path() : out;
  if (!o.dtype.empty() && o.dtype != "auto" && o.format != ExportFormat::hf)
    throw UsageError("--dtype applies to --format hf (GGUF takes --gguf-type)");

  // Every check before the first byte is written.
  const std::string adapter_dir = o.adapter_dir.empty() ? "" : resolve_adapter_dir(o.adapter_dir);
  // --force must never replace the inputs themselves.
  for (const std::string& input : {o.model_dir, adapter_dir}) {
    if (input.empty() || !fs::exists(input) || !fs::exists(out_dir)) continue;
    const fs::path in_path = fs::canonical(input), out_path = fs::canonical(out_dir);
    const auto rel = in_path.lexically_relative(out_path);
    if (!rel.empty() && *rel.begin() != "..")
      throw Error("output " + out_dir.string() + " holds the input " + input + "; choose another OUT");
  }
  detail::CheckedInputs in = detail::check_inputs(o.model_dir, adapter_dir);
  if (!adapter_dir.empty()) {
    in.run_dir = train::find_adapter_run(adapter_dir).run_dir;
    in.chat_template = detail::run_chat_template(in.run_dir);
  }
  if (o.format != ExportFormat::peft) detail::require_tokenizer(o.model_dir);
  std::string name = o.name.empty() ? out_dir.filename().string() : o.name;
  if (o.format == ExportFormat::gguf) {
    gguf_architecture(in.config.model_type);
    if (!o.lora_only) {
      if (!fs::is_regular_file(fs::path(o.model_dir) / "tokenizer.json"))
        throw Error(
            "model directory " + o.model_dir +
            " has no tokenizer.json; GGUF export needs a byte-level BPE tokenizer.json (SentencePiece "
            "tokenizer.model is not supported)");
      detect_tokenizer_pre((fs::path(o.model_dir) / "tokenizer.json").string());
    }
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
      throw UsageError("--name '" + name + "' cannot name a file (no '/', not starting with '.')");
  }
  if (!o.dtype.empty() && o.dtype != "auto") {
    static const std::vector<std::string> kDtypes = {"float32", "fp32",    "bfloat16",
                                                     "bf16",    "float16", "fp16"};
    if (std::find(kDtypes.begin(), kDtypes.end(), o.dtype) == kDtypes.end())
      throw UsageError("--dtype '" + o.dtype + "' is not one of auto, float32, bfloat16, float16");
  }

  ExportReport report;
  report.output = out_dir.string();
  report.warnings = in.warnings;
  for (const auto& w : in.warnings) util::log_warn(w);

  Staging staging(out_dir);
  switch (o.format) {
    case ExportFormat::hf: {
      detail::HfWriteOptions ho;
      ho.max_shard_bytes = o.max_shard_bytes;
      ho.dtype = o.dtype == "auto" ? "" : o.dtype;
      const detail::HfWriteResult r = detail::write_hf(in, ho, staging.dir());
      report.shards = r.shards;
      report.dtype = r.dtype;
      report.merged_layers = r.merged_layers;
      report.warnings.insert(report.warnings.end(), r.warnings.begin(), r.warnings.end());
      break;
    }
    case ExportFormat::peft:
      detail::write_peft(in, staging.dir());
      break;
    case ExportFormat::gguf:
      write_gguf(in, o, staging.dir(), name, report);
      break;
  }
  for (const auto& entry : fs::recursive_directory_iterator(staging.dir())) {
    if (!entry.is_regular_file()) continue;
    report.files.push_back(fs::relative(entry.path(), staging.dir()).string());
    report.bytes += entry.file_size();
  }
  std::sort(report.files.begin(), report.files.end());
  staging.publish(o.force);
  return report;
}

}  // namespace dsft::exporter
