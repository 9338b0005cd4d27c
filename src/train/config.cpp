// TrainConfig parsing: one table of keys (name, reader, writer), YAML + key=value overrides,
// validation with messages that name the key and value, and serialisation back to YAML.
#include "dsft/train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>

#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/strings.h"

namespace dsft::train {
namespace {

// Where a value came from, for error messages: "config.yaml" or "the command line".
struct Origin {
  std::string where;
};

std::string show(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsNull()) return "(empty)";
  YAML::Emitter e;
  e << YAML::Flow << node;
  return e.c_str();
}

[[noreturn]] void bad_value(const std::string& key, const YAML::Node& node, const Origin& o,
                            const std::string& expected, const std::string& hint = "") {
  throw Error(key + ": expected " + expected + ", got " + show(node) + " (" + o.where + ")" + hint);
}

template <typename T>
T read_scalar(const std::string& key, const YAML::Node& node, const Origin& o, const char* what) {
  if (!node.IsScalar()) bad_value(key, node, o, what);
  T v{};
  if (!YAML::convert<T>::decode(node, v)) bad_value(key, node, o, what);
  return v;
}

int64_t read_int(const std::string& key, const YAML::Node& n, const Origin& o) {
  return read_scalar<int64_t>(key, n, o, "an integer");
}

double read_double(const std::string& key, const YAML::Node& n, const Origin& o) {
  double v = read_scalar<double>(key, n, o, "a number");
  if (!std::isfinite(v)) bad_value(key, n, o, "a finite number");
  return v;
}

bool read_bool(const std::string& key, const YAML::Node& n, const Origin& o) {
  return read_scalar<bool>(key, n, o, "true or false");
}

std::string read_string(const std::string& key, const YAML::Node& n, const Origin& o) {
  if (n.IsNull()) return "";
  if (!n.IsScalar()) bad_value(key, n, o, "a string");
  return n.Scalar();
}

// A list of strings; a single scalar is a one-element list, null is empty.
std::vector<std::string> read_list(const std::string& key, const YAML::Node& n, const Origin& o) {
  std::vector<std::string> out;
  if (n.IsNull()) return out;
  if (n.IsScalar()) {
    if (!n.Scalar().empty()) out.push_back(n.Scalar());
    return out;
  }
  if (!n.IsSequence()) bad_value(key, n, o, "a string or a list of strings");
  for (const auto& item : n) {
    if (!item.IsScalar() || item.Scalar().empty()) bad_value(key, n, o, "a list of non-empty strings");
    out.push_back(item.Scalar());
  }
  return out;
}

template <typename E>
E read_choice(const std::string& key, const YAML::Node& n, const Origin& o,
              const std::vector<std::pair<const char*, E>>& choices) {
  std::string s = n.IsScalar() ? n.Scalar() : "";
  std::vector<std::string> names;
  for (const auto& [name, value] : choices) {
    if (s == name) return value;
    names.emplace_back(name);
  }
  std::string near = n.IsScalar() ? util::closest_match(s, names) : "";
  std::string hint;
  if (!near.empty() && util::edit_distance(s, near) <= 3) hint = "; did you mean '" + near + "'?";
  bad_value(key, n, o, "one of " + util::join(names, " | "), hint);
}

const std::vector<std::pair<const char*, SchedulerType>> kSchedulers = {
    {"linear", SchedulerType::linear},
    {"cosine", SchedulerType::cosine},
    {"constant", SchedulerType::constant},
    {"constant_with_warmup", SchedulerType::constant_with_warmup}};
const std::vector<std::pair<const char*, FinetuningType>> kFinetuning = {
    {"lora", FinetuningType::lora}, {"qlora", FinetuningType::qlora}, {"full", FinetuningType::full}};
const std::vector<std::pair<const char*, LoraBias>> kBias = {
    {"none", LoraBias::none}, {"all", LoraBias::all}, {"lora_only", LoraBias::lora_only}};
const std::vector<std::pair<const char*, Quantization>> kQuant = {
    {"none", Quantization::none}, {"nf4", Quantization::nf4}, {"int8", Quantization::int8}};

template <typename E>
const char* choice_name(E v, const std::vector<std::pair<const char*, E>>& choices) {
  for (const auto& [name, value] : choices)
    if (value == v) return name;
  return "?";
}

// One row per key: how to read it into a TrainConfig and how to write it back.
struct Key {
  std::string name;
  std::function<void(TrainConfig&, const std::string&, const YAML::Node&, const Origin&)> read;
  std::function<void(const TrainConfig&, YAML::Emitter&)> write;
  bool in_hash = true;  // part of config_hash
};

template <typename M>
Key int_key(const char* name, M TrainConfig::*m, bool in_hash = true) {
  return {name,
          [m](TrainConfig& c, const std::string& k, const YAML::Node& n, const Origin& o) { c.*m = read_int(k, n, o); },
          [m](const TrainConfig& c, YAML::Emitter& e) { e << c.*m; }, in_hash};
}

Key double_key(const char* name, double TrainConfig::*m, bool in_hash = true) {
  return {name,
          [m](TrainConfig& c, const std::string& k, const YAML::Node& n, const Origin& o) { c.*m = read_double(k, n, o); },
          [m](const TrainConfig& c, YAML::Emitter& e) {
            // Shortest text that reads back to the same double.
            char buf[32];
            for (int prec = 6; prec <= 17; ++prec) {
              std::snprintf(buf, sizeof buf, "%.*g", prec, c.*m);
              if (std::strtod(buf, nullptr) == c.*m) break;
            }
            std::string s = buf;
            // Keep it a float in YAML's eyes ("3" would read back as an int, which is fine for
            // us but less clear to a reader of the resolved config).
            if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
            e << s;
          },
          in_hash};
}

Key bool_key(const char* name, bool TrainConfig::*m, bool in_hash = true) {
  return {name,
          [m](TrainConfig& c, const std::string& k, const YAML::Node& n, const Origin& o) { c.*m = read_bool(k, n, o); },
          [m](const TrainConfig& c, YAML::Emitter& e) { e << YAML::TrueFalseBool << c.*m; }, in_hash};
}

Key string_key(const char* name, std::string TrainConfig::*m, bool in_hash = true) {
  return {name,
          [m](TrainConfig& c, const std::string& k, const YAML::Node& n, const Origin& o) { c.*m = read_string(k, n, o); },
          [m](const TrainConfig& c, YAML::Emitter& e) { e << YAML::DoubleQuoted << c.*m; }, in_hash};
}

Key list_key(const char* name, std::vector<std::string> TrainConfig::*m, bool in_hash = true) {
  return {name,
          [m](TrainConfig& c, const std::string& k, const YAML::Node& n, const Origin& o) { c.*m = read_list(k, n, o); },
          [m](const TrainConfig& c, YAML::Emitter& e) {
            e << YAML::Flow << YAML::BeginSeq;
            for (const auto& s : c.*m) e << YAML::DoubleQuoted << s;
            e << YAML::EndSeq;
          },
          in_hash};
}

template <typename E>
Key choice_key(const char* name, E TrainConfig::*m, const std::vector<std::pair<const char*, E>>& choices) {
  return {name,
          [m, &choices](TrainConfig& c, const std::string& k, const YAML::Node& n, const Origin& o) {
            c.*m = read_choice(k, n, o, choices);
          },
          [m, &choices](const TrainConfig& c, YAML::Emitter& e) { e << choice_name(c.*m, choices); }, true};
}

using C = TrainConfig;

// The table, in the order the resolved YAML is written.
const std::vector<Key>& keys() {
  static const std::vector<Key> table = {
      string_key("model_name_or_path", &C::model_name_or_path),
      string_key("model_init", &C::model_init, false),
      string_key("output_dir", &C::output_dir, false),
      string_key("resume_from_checkpoint", &C::resume_from_checkpoint, false),
      double_key("num_train_epochs", &C::num_train_epochs, false),
      int_key("max_steps", &C::max_steps, false),
      int_key("per_device_train_batch_size", &C::per_device_train_batch_size),
      int_key("per_device_eval_batch_size", &C::per_device_eval_batch_size, false),
      int_key("gradient_accumulation_steps", &C::gradient_accumulation_steps),
      double_key("learning_rate", &C::learning_rate),
      choice_key("lr_scheduler_type", &C::lr_scheduler_type, kSchedulers),
      double_key("warmup_ratio", &C::warmup_ratio),
      int_key("warmup_steps", &C::warmup_steps),
      double_key("weight_decay", &C::weight_decay),
      double_key("adam_beta1", &C::adam_beta1),
      double_key("adam_beta2", &C::adam_beta2),
      double_key("adam_epsilon", &C::adam_epsilon),
      double_key("max_grad_norm", &C::max_grad_norm),
      int_key("seed", &C::seed),
      int_key("data_seed", &C::data_seed),
      bool_key("bf16", &C::bf16),
      bool_key("fp16", &C::fp16),
      bool_key("gradient_checkpointing", &C::gradient_checkpointing),
      string_key("device", &C::device, false),
      int_key("save_steps", &C::save_steps, false),
      int_key("save_total_limit", &C::save_total_limit, false),
      int_key("eval_steps", &C::eval_steps, false),
      int_key("logging_steps", &C::logging_steps, false),
      int_key("early_stopping_patience", &C::early_stopping_patience),
      double_key("early_stopping_threshold", &C::early_stopping_threshold),
      bool_key("load_best_model_at_end", &C::load_best_model_at_end),
      string_key("metric_for_best_model", &C::metric_for_best_model),
      bool_key("greater_is_better", &C::greater_is_better),
      string_key("log_level", &C::log_level, false),
      choice_key("finetuning_type", &C::finetuning_type, kFinetuning),
      int_key("r", &C::r),
      double_key("lora_alpha", &C::lora_alpha),
      double_key("lora_dropout", &C::lora_dropout),
      list_key("target_modules", &C::target_modules),
      choice_key("bias", &C::bias, kBias),
      bool_key("use_rslora", &C::use_rslora),
      list_key("modules_to_save", &C::modules_to_save),
      choice_key("quantization", &C::quantization, kQuant),
      bool_key("double_quant", &C::double_quant),
      int_key("quant_block_size", &C::quant_block_size),
      list_key("dataset", &C::dataset),
      string_key("train_file", &C::train_file),
      string_key("validation_file", &C::validation_file),
      double_key("val_size", &C::val_size),
      int_key("max_seq_length", &C::max_seq_length),
      bool_key("packing", &C::packing),
      string_key("chat_template", &C::chat_template),
      bool_key("train_on_inputs", &C::train_on_inputs),
      string_key("mix_dataset", &C::mix_dataset),
      double_key("mix_ratio", &C::mix_ratio),
  };
  return table;
}

// Other spellings people use for the same key.
const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> a = {{"lora_r", "r"}};
  return a;
}

const Key* find_key(const std::string& name) {
  for (const auto& k : keys())
    if (k.name == name) return &k;
  return nullptr;
}

// Canonical name for `name`, or an error naming the closest valid key.
std::string canonical_key(const std::string& name, const Origin& o) {
  auto a = aliases().find(name);
  if (a != aliases().end()) return a->second;
  if (find_key(name)) return name;
  std::string near = util::closest_match(name, train_config_keys());
  throw Error("unknown key '" + name + "' (" + o.where + ")" +
              (near.empty() ? "" : "; did you mean '" + near + "'?"));
}

struct Entry {
  YAML::Node value;
  Origin origin;
  std::string spelled;  // as the user wrote it (alias or canonical), for messages
};

void collect_yaml(const std::string& text, const std::string& source, std::map<std::string, Entry>& out) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(source + ": not valid YAML at line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (root.IsNull()) return;  // an empty file means "all defaults"
  if (!root.IsMap()) throw Error(source + ": expected a mapping of key: value pairs at the top level");
  Origin o{source};
  for (const auto& kv : root) {
    if (!kv.first.IsScalar()) throw Error(source + ": keys must be plain names, got " + show(kv.first));
    const std::string spelled = kv.first.Scalar();
    const std::string key = canonical_key(spelled, o);
    auto it = out.find(key);
    if (it != out.end())
      throw Error(source + ": key '" + spelled + "' is given twice (also as '" + it->second.spelled + "')");
    out[key] = Entry{kv.second, o, spelled};
  }
}

void collect_overrides(const std::vector<std::string>& overrides, std::map<std::string, Entry>& out) {
  Origin o{"the command line"};
  std::map<std::string, std::string> seen;
  for (const auto& arg : overrides) {
    const auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error("override '" + arg + "' is not key=value (e.g. learning_rate=2e-4)");
    const std::string spelled = util::trim(arg.substr(0, eq));
    const std::string key = canonical_key(spelled, o);
    if (seen.count(key)) throw Error("override '" + spelled + "' is given twice on the command line");
    seen[key] = spelled;
    YAML::Node value;
    try {
      value = YAML::Load(arg.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw Error("override " + arg + ": value is not a YAML scalar or list: " + e.msg);
    }
    out[key] = Entry{value, o, spelled};
  }
}

bool lower_is_better(const std::string& metric) {
  return util::ends_with(metric, "loss") || util::ends_with(metric, "ppl") ||
         util::ends_with(metric, "perplexity");
}

[[noreturn]] void invalid(const std::string& key, const std::string& value, const std::string& why) {
  throw Error(key + " = " + value + ": " + why);
}

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

const char* to_string(SchedulerType t) { return choice_name(t, kSchedulers); }
const char* to_string(FinetuningType t) { return choice_name(t, kFinetuning); }
const char* to_string(LoraBias t) { return choice_name(t, kBias); }
const char* to_string(Quantization t) { return choice_name(t, kQuant); }

std::vector<std::string> TrainConfig::train_files() const {
  std::vector<std::string> files = dataset;
  if (!train_file.empty()) files.push_back(train_file);
  return files;
}

int64_t TrainConfig::num_warmup_steps(int64_t total_steps) const {
  if (warmup_steps > 0) return warmup_steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

const std::vector<std::string>& train_config_keys() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& k : keys()) n.push_back(k.name);
    for (const auto& [alias, target] : aliases()) n.push_back(alias);
    return n;
  }();
  return names;
}

TrainConfig parse_train_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                               const std::string& source) {
  std::map<std::string, Entry> entries;
  collect_yaml(yaml_text, source, entries);
  collect_overrides(overrides, entries);

  TrainConfig cfg;
  for (const auto& k : keys()) {
    auto it = entries.find(k.name);
    if (it == entries.end()) continue;
    k.read(cfg, it->second.spelled, it->second.value, it->second.origin);
  }
  // Resolve what the user left to us.
  if (!entries.count("greater_is_better")) cfg.greater_is_better = !lower_is_better(cfg.metric_for_best_model);
  if (!entries.count("quantization") && cfg.finetuning_type == FinetuningType::qlora)
    cfg.quantization = Quantization::nf4;
  if (!entries.count("data_seed")) cfg.data_seed = cfg.seed;
  validate(cfg);
  return cfg;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!util::path_exists(path)) throw Error("config file " + path + " does not exist");
  return parse_train_config(util::read_file(path), overrides, path);
}

void validate(const TrainConfig& c) {
  auto positive = [](const char* key, int64_t v) {
    if (v <= 0) invalid(key, std::to_string(v), "must be a positive integer");
  };
  auto non_negative = [](const char* key, int64_t v) {
    if (v < 0) invalid(key, std::to_string(v), "must be 0 or more");
  };
  auto ratio = [](const char* key, double v) {
    if (!(v >= 0.0 && v <= 1.0)) invalid(key, num(v), "must be between 0 and 1");
  };

  if (c.model_name_or_path.empty())
    throw Error("model_name_or_path is not set: name a model directory (HF format), e.g. "
                "model_name_or_path=runs/tiny-model");
  if (c.output_dir.empty()) throw Error("output_dir is empty: name the run directory, e.g. output_dir=runs/my-run");
  if (c.train_files().empty())
    throw Error("no training data: set dataset (a list of JSONL files) or train_file, e.g. "
                "dataset=[data/train.jsonl]");

  if (c.max_steps == 0 || c.max_steps < -1)
    invalid("max_steps", std::to_string(c.max_steps), "must be a positive step count, or -1 to use num_train_epochs");
  if (c.max_steps < 0 && !(c.num_train_epochs > 0))
    invalid("num_train_epochs", num(c.num_train_epochs), "must be positive when max_steps is not set");
  positive("per_device_train_batch_size", c.per_device_train_batch_size);
  positive("per_device_eval_batch_size", c.per_device_eval_batch_size);
  positive("gradient_accumulation_steps", c.gradient_accumulation_steps);

  if (!(c.learning_rate > 0)) invalid("learning_rate", num(c.learning_rate), "must be positive");
  ratio("warmup_ratio", c.warmup_ratio);
  non_negative("warmup_steps", c.warmup_steps);
  if (c.weight_decay < 0) invalid("weight_decay", num(c.weight_decay), "must be 0 or more");
  if (!(c.adam_beta1 >= 0 && c.adam_beta1 < 1)) invalid("adam_beta1", num(c.adam_beta1), "must be in [0, 1)");
  if (!(c.adam_beta2 >= 0 && c.adam_beta2 < 1)) invalid("adam_beta2", num(c.adam_beta2), "must be in [0, 1)");
  if (!(c.adam_epsilon > 0)) invalid("adam_epsilon", num(c.adam_epsilon), "must be positive");
  if (c.max_grad_norm < 0) invalid("max_grad_norm", num(c.max_grad_norm), "must be 0 (no clipping) or positive");
  non_negative("seed", c.seed);
  if (c.data_seed < -1) invalid("data_seed", std::to_string(c.data_seed), "must be 0 or more, or -1 to use seed");

  if (c.bf16 && c.fp16) throw Error("bf16 and fp16 are both true: choose one compute precision");
  const bool cuda_n = util::starts_with(c.device, "cuda:") && c.device.size() > 5 &&
                      std::all_of(c.device.begin() + 5, c.device.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda" && !cuda_n)
    invalid("device", c.device, "must be auto, cpu, cuda or cuda:N");

  non_negative("save_steps", c.save_steps);
  non_negative("save_total_limit", c.save_total_limit);
  non_negative("eval_steps", c.eval_steps);
  positive("logging_steps", c.logging_steps);
  non_negative("early_stopping_patience", c.early_stopping_patience);
  if (c.early_stopping_threshold < 0)
    invalid("early_stopping_threshold", num(c.early_stopping_threshold), "must be 0 or more");
  if (c.metric_for_best_model.empty()) invalid("metric_for_best_model", "''", "must name a metric, e.g. eval_loss");
  if (!c.has_evaluation() && c.early_stopping_patience > 0)
    throw Error("early_stopping_patience = " + std::to_string(c.early_stopping_patience) +
                " needs evaluation data: set validation_file or val_size");
  if (!c.has_evaluation() && c.load_best_model_at_end)
    throw Error("load_best_model_at_end needs evaluation data: set validation_file or val_size");
  static const std::vector<std::string> levels = {"debug", "info", "warn", "error"};
  if (std::find(levels.begin(), levels.end(), c.log_level) == levels.end())
    invalid("log_level", c.log_level, "must be debug, info, warn or error");

  if (c.finetuning_type != FinetuningType::full) {
    positive("r", c.r);
    if (!(c.lora_alpha > 0)) invalid("lora_alpha", num(c.lora_alpha), "must be positive");
    if (!(c.lora_dropout >= 0 && c.lora_dropout < 1)) invalid("lora_dropout", num(c.lora_dropout), "must be in [0, 1)");
    if (c.target_modules.empty())
      throw Error("target_modules is empty: name the linear layers to adapt (e.g. [q_proj, v_proj]) or all-linear");
    if (c.target_modules.size() > 1 &&
        std::find(c.target_modules.begin(), c.target_modules.end(), "all-linear") != c.target_modules.end())
      throw Error("target_modules: all-linear cannot be combined with other names");
  }
  if (c.finetuning_type == FinetuningType::qlora && c.quantization == Quantization::none)
    throw Error("finetuning_type = qlora needs a quantized base: set quantization to nf4 or int8");
  if (c.finetuning_type != FinetuningType::qlora && c.quantization != Quantization::none)
    throw Error(std::string("quantization = ") + to_string(c.quantization) +
                " applies only to finetuning_type = qlora (got " + to_string(c.finetuning_type) + ")");
  if (c.quant_block_size <= 0 || (c.quant_block_size & (c.quant_block_size - 1)) != 0)
    invalid("quant_block_size", std::to_string(c.quant_block_size), "must be a positive power of two (e.g. 64)");

  ratio("val_size", c.val_size);
  if (c.val_size >= 1.0) invalid("val_size", num(c.val_size), "must be below 1 (it is the held-out fraction)");
  if (c.val_size > 0 && !c.validation_file.empty())
    throw Error("val_size = " + num(c.val_size) + " and validation_file = " + c.validation_file +
                " are both set: use one source of evaluation data");
  positive("max_seq_length", c.max_seq_length);
  ratio("mix_ratio", c.mix_ratio);
  if (c.mix_ratio >= 1.0) invalid("mix_ratio", num(c.mix_ratio), "must be below 1 (it is the mixed-in fraction)");
  if (c.mix_ratio > 0 && c.mix_dataset.empty())
    throw Error("mix_ratio = " + num(c.mix_ratio) + " needs mix_dataset (the general data to mix in)");
  if (!c.mix_dataset.empty() && c.mix_ratio == 0)
    throw Error("mix_dataset = " + c.mix_dataset + " is set but mix_ratio is 0: set mix_ratio (e.g. 0.1)");
}

std::string to_yaml(const TrainConfig& cfg) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  for (const auto& k : keys()) {
    e << YAML::Key << k.name << YAML::Value;
    k.write(cfg, e);
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

void write_config(const TrainConfig& cfg, const std::string& path) {
  util::write_file_atomic(path, "# Resolved configuration of this run (defaults < YAML < command line).\n"
                                "# Rerun it with: dsft train --config " + path + "\n" + to_yaml(cfg));
}

std::string config_hash(const TrainConfig& cfg) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  auto mix = [&h](const std::string& s) {
    for (unsigned char ch : s) {
      h ^= ch;
      h *= 1099511628211ull;
    }
  };
  for (const auto& k : keys()) {
    if (!k.in_hash) continue;
    YAML::Emitter e;
    k.write(cfg, e);
    mix(k.name);
    mix("=");
    mix(e.c_str());
    mix("\n");
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

}  // namespace dsft::train
