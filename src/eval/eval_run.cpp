// run_eval(): the order of `dsft eval` — options checked and gates parsed before anything loads,
// the data read and checked, the adapter's run config found (template, window, masking as
// trained), the model loaded once with the adapter attached (disabled for the base figures),
// then perplexity, accuracy, A/B sheets, speed, ratings, the report and the gates.
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "dsft/eval/ab_sheet.h"
#include "dsft/eval/accuracy.h"
#include "dsft/eval/eval.h"
#include "dsft/eval/eval_data.h"
#include "dsft/eval/gates.h"
#include "dsft/eval/perplexity.h"
#include "dsft/eval/report.h"
#include "dsft/eval/speed.h"
#include "dsft/model/config.h"
#include "dsft/model/load.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/peft/inject.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"
#include "dsft/train/checkpoints.h"
#include "dsft/train/config.h"
#include "dsft/train/memory_plan.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "dsft/util/strings.h"

namespace dsft::eval {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string iso_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The training run an adapter came from (train::find_adapter_run) with its config read.
struct RunInfo {
  std::optional<train::TrainConfig> config;
  std::string config_path;
  std::string metrics_path;  // "" when the run has none
};

RunInfo find_run(const std::string& adapter_dir) {
  const train::AdapterRun where = train::find_adapter_run(adapter_dir);
  RunInfo info;
  info.config_path = where.config_path;
  info.metrics_path = where.metrics_path;
  if (!info.config_path.empty()) {
    try {
      info.config = train::load_train_config(info.config_path);
    } catch (const Error& e) {
      throw Error(
          "cannot read the training config " + info.config_path + " of the adapter's run (" + e.what() +
          "); pass --chat-template and --max-seq-length and move the adapter out of the run directory");
    }
  }
  return info;
}

void check_model_dir(const std::string& dir) {
  if (!fs::is_directory(dir))
    throw Error("model directory " + dir + " does not exist (expected config.json, weights and a tokenizer)");
  if (!fs::exists(fs::path(dir) / "config.json"))
    throw Error("model directory " + dir + " has no config.json");
  if (!fs::exists(fs::path(dir) / "tokenizer.json") && !fs::exists(fs::path(dir) / "tokenizer.model"))
    throw Error(
        "model directory " + dir +
        " has no tokenizer (tokenizer.json or tokenizer.model); copy the model's tokenizer files into it");
}

void check_adapter_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("adapter directory " + dir + " does not exist");
  if (!fs::exists(fs::path(dir) / "adapter_config.json"))
    throw Error(
        "adapter directory " + dir +
        " has no adapter_config.json (expected a LoRA adapter, e.g. <run>/adapter or <run>/checkpoint-N)");
}

// The records that count for perplexity as the training data path tokenises them. Multiple-choice
// lines are blanked in a private copy (keeping line numbers) because the dataset reads files.
train::TokenizedDataset build_lm_records(const EvalData& data, const text::Tokenizer& tok,
                                         const text::ChatTemplate& tmpl, const train::DatasetOptions& dopt) {
  if (data.mc_lines.empty()) return train::TokenizedDataset::build({data.path}, tok, tmpl, dopt);
  const fs::path dir = fs::temp_directory_path() / ("dsft-eval-" + std::to_string(::getpid()));
  util::make_private_dir(dir.string());
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{dir};
  const std::string copy = (dir / fs::path(data.path).filename()).string();
  {
    std::ifstream in(data.path, std::ios::binary);
    std::string out, line;
    size_t line_no = 0, k = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (k < data.mc_lines.size() && data.mc_lines[k] == line_no) {
        ++k;
        line.clear();
      }
      out += line;
      out += '\n';
    }
    util::write_file_atomic(copy, out);
  }
  try {
    return train::TokenizedDataset::build({copy}, tok, tmpl, dopt);
  } catch (const Error& e) {
    std::string msg = e.what();
    for (size_t p; (p = msg.find(copy)) != std::string::npos;) msg.replace(p, copy.size(), data.path);
    throw Error(msg);
  }
}

struct AbTemplate {
  std::string id, text, category;
};

std::vector<AbTemplate> read_ab_templates(const std::string& path) {
  if (!fs::is_regular_file(path)) throw Error("--ab-prompts file " + path + " does not exist");
  const std::string content = util::read_file(path);
  std::vector<AbTemplate> out;
  const size_t first = content.find_first_not_of(" \t\r\n");
  const bool jsonl = first != std::string::npos && content[first] == '{';
  std::istringstream in(content);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (util::trim(line).empty()) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    AbTemplate t;
    if (jsonl) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) throw Error(where + ": not a JSON object (expected {\"id\", \"template\"})");
      const char* key = j.contains("template") ? "template" : "prompt";
      if (!j.contains(key) || !j[key].is_string() || j[key].get<std::string>().empty())
        throw Error(where + ": needs a non-empty \"template\" string");
      t.text = j[key].get<std::string>();
      t.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                              : "p" + std::to_string(out.size() + 1);
      if (j.contains("category") && j["category"].is_string()) t.category = j["category"].get<std::string>();
    } else {
      t.text = line;
      t.id = "p" + std::to_string(out.size() + 1);
    }
    out.push_back(std::move(t));
  }
  if (out.empty()) throw Error("--ab-prompts file " + path + " holds no prompt template");
  return out;
}

struct AbVars {
  std::string id, category;
  std::map<std::string, std::string> vars;
};

std::vector<AbVars> read_ab_vars(const std::string& path) {
  if (!fs::is_regular_file(path)) throw Error("--ab-vars file " + path + " does not exist");
  std::istringstream in(util::read_file(path));
  std::vector<AbVars> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (util::trim(line).empty()) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) throw Error(where + ": not a JSON object of placeholder values");
    AbVars v;
    for (const auto& [k, val] : j.items()) {
      if (val.is_string())
        v.vars[k] = val.get<std::string>();
      else if (val.is_number() || val.is_boolean())
        v.vars[k] = val.dump();
      else if (!val.is_null())
        throw Error(where + ": value of \"" + k + "\" must be a string or a number");
    }
    v.id = v.vars.count("id") ? v.vars["id"] : "v" + std::to_string(line_no);
    if (v.vars.count("category")) v.category = v.vars["category"];
    out.push_back(std::move(v));
  }
  if (out.empty()) throw Error("--ab-vars file " + path + " holds no record");
  return out;
}

// The summary line of aggregate_ratings' output: pooled rates and Fleiss' kappa.
std::string ratings_summary(const nlohmann::json& ab, size_t raters) {
  std::string s = "ratings (" + std::to_string(raters) + " raters, " +
                  std::to_string(ab.value("n_items", int64_t{0})) + " items)";
  if (ab.contains("pooled") && ab["pooled"].is_object()) {
    const auto& p = ab["pooled"];
    // A rate is absent (null) when no item was rated: say so rather than print 0%.
    auto rate = [&](const char* k) {
      return p.contains(k) && p[k].is_number() ? fmt("%.1f%%", 100 * p[k].get<double>()) : std::string("n/a");
    };
    s += ": tuned better " + rate("win_rate") + ", tie " + rate("tie_rate") + ", base better " +
         rate("loss_rate");
  }
  if (ab.contains("fleiss_kappa") && ab["fleiss_kappa"].is_number())
    s += ", Fleiss' kappa " + fmt("%.3f", ab["fleiss_kappa"].get<double>());
  return s + "\n";
}

void write_report_file(const std::string& path, const std::string& bytes) {
  const fs::path p(path);
  if (p.has_parent_path() && !fs::exists(p.parent_path())) util::make_private_dir(p.parent_path().string());
  util::write_file_atomic(path, bytes);
}

}  // namespace

std::string json_path_beside(const std::string& html_path) {
  fs::path p(html_path);
  if (p.extension() == ".json")
    p.replace_extension(".report.json");
  else
    p.replace_extension(".json");
  return p.string();
}

EvalOutcome run_eval(const EvalOptions& o) {
  // ---- 1. Options, before anything is read or loaded.
  const std::vector<Gate> gates = parse_gates(o.gates);
  const bool rating = !o.ratings.empty();
  if (rating && o.ratings.size() < 3)
    throw UsageError("--ratings needs the sheets of at least three raters (got " +
                     std::to_string(o.ratings.size()) + ")");
  if (rating && o.key_path.empty())
    throw UsageError("--ratings needs --key (the key.json written with the A/B sheet)");
  if (!rating && !o.key_path.empty()) throw UsageError("--key is only used with --ratings");
  const bool modelling = !o.model_dir.empty();
  if (!modelling && (!o.data_path.empty() || !o.adapter_dir.empty() || !o.ab_prompts.empty()))
    throw UsageError("--model is required to evaluate --data, --adapter or --ab-prompts");
  if (!modelling && !rating) throw UsageError("--model and --data are required (or --ratings with --key)");
  if (modelling && o.data_path.empty() && o.ab_prompts.empty())
    throw UsageError(
        "--data is required (held-out JSONL records) unless only --ab-prompts sheets are written");
  if (o.baseline && o.adapter_dir.empty())
    throw UsageError("--baseline compares the base with base + adapter: give --adapter too");
  if (!o.ab_prompts.empty() && o.adapter_dir.empty())
    throw UsageError("--ab-prompts compares the base with the tuned model: give --adapter too");
  if (!o.ab_prompts.empty() && o.ab_out.empty())
    throw UsageError("--ab-prompts needs --ab-out DIR for the sheets");
  if (!o.ab_vars.empty() && o.ab_prompts.empty())
    throw UsageError("--ab-vars fills --ab-prompts: give --ab-prompts too");
  if (o.batch_size < 1) throw UsageError("--batch-size must be at least 1");

  nlohmann::json report = nlohmann::json::object();
  std::string summary;
  if (modelling) report["model"] = o.model_dir;
  if (!o.adapter_dir.empty()) report["adapter"] = o.adapter_dir;
  if (!o.data_path.empty()) report["data"] = o.data_path;
  report["created"] = iso_now();

  // ---- 2. Data, run config and what will be computed (so that a gate on a metric this run
  // cannot compute is refused before the model loads).
  std::optional<EvalData> data;
  if (!o.data_path.empty()) data = read_eval_data(o.data_path);
  if (modelling) check_model_dir(o.model_dir);
  if (!o.adapter_dir.empty()) check_adapter_dir(o.adapter_dir);
  const RunInfo run = find_run(o.adapter_dir);
  if (run.config)
    util::log_info("using the template, window and masking of the training run " + run.config_path);
  const bool lm = data && data->lm_records > 0;
  const bool with_adapter = !o.adapter_dir.empty();
  const bool score_base = lm && (!with_adapter || o.baseline);
  std::vector<QaItem> qa_items;
  std::vector<McItem> mc_items;
  if (data) {
    qa_items = data->qa;
    mc_items = data->mc;
    if (o.limit > 0) {
      if (static_cast<int64_t>(qa_items.size()) > o.limit) qa_items.resize(static_cast<size_t>(o.limit));
      if (static_cast<int64_t>(mc_items.size()) > o.limit) mc_items.resize(static_cast<size_t>(o.limit));
    }
  }
  {
    std::vector<std::string> available;
    if (lm) available.insert(available.end(), {"ppl", "loss"});
    if (score_base) available.insert(available.end(), {"base_ppl", "base_loss"});
    if (lm && with_adapter && o.baseline) available.push_back("ppl_drop");
    if (!qa_items.empty())
      available.insert(available.end(), {"exact_match", "normalized_match", "contains", "rouge_l"});
    if (!mc_items.empty()) available.push_back("mc_accuracy");
    if (modelling && data && o.speed_tokens > 0)
      available.insert(available.end(), {"prefill_tokens_per_s", "decode_tokens_per_s",
                                         "time_to_first_token_ms", "peak_memory_mb"});
    if (rating) available.insert(available.end(), {"win_rate", "tie_rate", "loss_rate", "kappa"});
    require_available(gates, available);
  }
  // The perplexity window (the run's max_seq_length unless given, at most the model's positions),
  // checked against --stride before anything loads.
  WindowOptions wo;
  if (lm) {
    wo.window = o.max_seq_length > 0 ? o.max_seq_length : run.config ? run.config->max_seq_length : 2048;
    const int64_t max_pos = model::load_config(o.model_dir).max_position_embeddings;
    if (max_pos > 0) wo.window = std::min(wo.window, max_pos);
    wo.stride = o.stride;
    resolved_stride(wo);
  }

  std::vector<nlohmann::json> prediction_rows;
  if (modelling) {
    // ---- 3. Tokenizer, template, model (+ adapter).
    const std::string template_name = !o.chat_template.empty() ? o.chat_template
                                      : run.config             ? run.config->chat_template
                                                               : "";
    auto tok = text::load_tokenizer(o.model_dir);
    const text::ChatTemplate tmpl = text::ChatTemplate::resolve(template_name, o.model_dir);
    const std::string device_name = train::resolve_device(o.device);
    const torch::Device device(device_name);
    model::LoadOptions lo;
    lo.dtype = model::parse_torch_dtype(o.dtype);
    lo.device = device;
    if (lo.dtype == torch::kFloat16 && !device.is_cuda())
      throw UsageError("--dtype float16 needs a GPU; use bfloat16 or float32 on the CPU");
    model::CausalLM lm_model = model::load_model(o.model_dir, lo);
    if (tok->vocab_size() > lm_model->config().vocab_size)
      throw Error("the tokenizer of " + o.model_dir + " has " + std::to_string(tok->vocab_size()) +
                  " tokens but the model only " + std::to_string(lm_model->config().vocab_size) +
                  " embeddings: the tokenizer belongs to another model");
    if (with_adapter) {
      // Shapes that fit are all load_adapter can check; a differently named base is worth a word.
      const std::string named = peft::read_adapter_config(o.adapter_dir).base_model_name_or_path;
      std::error_code ec;
      if (!named.empty() && fs::weakly_canonical(named, ec) != fs::weakly_canonical(o.model_dir, ec) &&
          fs::path(named).filename() != fs::path(o.model_dir).filename())
        util::log_warn("the adapter " + o.adapter_dir + " was trained on " + named + ", evaluated here on " +
                       o.model_dir + "; make sure they are the same model");
      const auto info = peft::load_adapter(*lm_model, o.adapter_dir);
      util::log_info("adapter " + o.adapter_dir + ": LoRA on " + std::to_string(info.modules.size()) +
                     " layers");
    }
    lm_model->eval();
    const int32_t pad_id = tok->pad_id.value_or(tok->eos_id.value_or(0));
    AnswerOptions ao;
    ao.max_new_tokens = o.max_new_tokens;
    ao.stop_ids = lm_model->config().eos_token_ids;
    if (tok->eos_id) ao.stop_ids.push_back(*tok->eos_id);
    auto use_adapter = [&](bool on) {
      if (with_adapter) peft::set_adapters_enabled(*lm_model, on);
    };
    const char* evaluated = with_adapter ? "tuned" : "base";

    // ---- 4. Perplexity.
    if (lm) {
      const int64_t window = wo.window;
      const int64_t stride = resolved_stride(wo);
      train::DatasetOptions dopt;
      dopt.max_seq_length = std::numeric_limits<int32_t>::max();  // whole records; windows do the rest
      dopt.packing = false;
      dopt.train_on_inputs = o.train_on_inputs >= 0 ? o.train_on_inputs == 1
                             : run.config           ? run.config->train_on_inputs
                                                    : false;
      dopt.cache_dir = "";
      dopt.tokenizer_dir = o.model_dir;
      const train::TokenizedDataset records = build_lm_records(*data, *tok, tmpl, dopt);
      if (!records.dropped_ids().empty())
        util::log_warn(
            std::to_string(records.dropped_ids().size()) +
            " records have no target token (e.g. an empty answer) and do not count for perplexity");
      nlohmann::json ppl = nlohmann::json::object();
      auto score = [&](bool adapter_on) {
        use_adapter(adapter_on);
        const PerplexityResult r = perplexity(*lm_model, records.records(), wo, o.batch_size, pad_id, device);
        if (r.tokens == 0) throw Error("no target token to score in " + o.data_path);
        return nlohmann::json{{"ppl", r.ppl()},
                              {"loss", r.loss()},
                              {"tokens", r.tokens},
                              {"records", r.records},
                              {"windows", r.windows}};
      };
      if (score_base) ppl["base"] = score(false);
      if (with_adapter) ppl["tuned"] = score(true);
      ppl["window"] = window;
      ppl["stride"] = stride;
      ppl["train_on_inputs"] = dopt.train_on_inputs;
      ppl["chat_template"] = tmpl.name();
      summary +=
          "perplexity on " + std::to_string(records.records().size()) + " records (window " +
          std::to_string(window) + ", stride " + std::to_string(stride) + ", " +
          std::to_string((ppl.contains("tuned") ? ppl["tuned"] : ppl["base"])["tokens"].get<int64_t>()) +
          " target tokens)\n";
      for (const char* which : {"base", "tuned"})
        if (ppl.contains(which))
          summary += std::string("  ") + (std::string(which) == "base" ? "base " : "tuned") + "  ppl " +
                     fmt("%.3f", ppl[which]["ppl"].get<double>()) + "  loss " +
                     fmt("%.4f", ppl[which]["loss"].get<double>()) + "\n";
      if (ppl.contains("base") && ppl.contains("tuned")) {
        const double b = ppl["base"]["ppl"].get<double>(), t = ppl["tuned"]["ppl"].get<double>();
        const double change = (t - b) / b;
        ppl["relative_change"] = change;
        summary += "  change " + fmt("%+.1f%%", 100 * change) +
                   (-change >= 0.15 ? " (a drop of at least 15%: the data feeding worked)\n"
                                    : " (less than a 15% drop: the data feeding is not shown to work)\n");
      }
      report["perplexity"] = ppl;
    }

    // ---- 5. Task accuracy (the evaluated model; with --baseline the base too).
    auto collect = [&](const char* kind, const char* which) {
      return [&, kind, which](const nlohmann::json& row) {
        if (o.predictions_path.empty()) return;
        nlohmann::json r = row;
        r["kind"] = kind;
        r["model"] = which;
        prediction_rows.push_back(std::move(r));
      };
    };
    if (!qa_items.empty() || !mc_items.empty()) {
      nlohmann::json acc = {{"n", 0}};
      auto run_accuracy = [&](const char* which) {
        nlohmann::json a = {{"n", 0}};
        if (!qa_items.empty()) a = score_qa(*lm_model, *tok, tmpl, qa_items, ao, collect("qa", which));
        if (!mc_items.empty())
          a["multiple_choice"] =
              score_multiple_choice(*lm_model, *tok, tmpl, mc_items, device, collect("mc", which));
        return a;
      };
      if (with_adapter && o.baseline) {
        use_adapter(false);
        report["baseline_accuracy"] = run_accuracy("base");
      }
      use_adapter(true);
      acc = run_accuracy(evaluated);
      report["accuracy"] = acc;
      auto line = [&](const std::string& label, const nlohmann::json& a) {
        std::string s;
        if (a.value("n", 0) > 0)
          s += label + " QA (" + std::to_string(a["n"].get<int64_t>()) + " items): exact " +
               fmt("%.3f", a["exact_match"].get<double>()) + ", normalized " +
               fmt("%.3f", a["normalized_match"].get<double>()) + ", contains " +
               fmt("%.3f", a["contains"].get<double>()) + ", ROUGE-L " +
               fmt("%.3f", a["rouge_l"].get<double>()) + "\n";
        if (a.contains("multiple_choice"))
          s += label + " multiple choice (" + std::to_string(a["multiple_choice"]["n"].get<int64_t>()) +
               " items): accuracy " + fmt("%.3f", a["multiple_choice"]["accuracy"].get<double>()) + "\n";
        return s;
      };
      if (report.contains("baseline_accuracy")) summary += line("base ", report["baseline_accuracy"]);
      summary += line(with_adapter ? "tuned" : "base ", acc);
      if (acc.contains("per_category"))
        for (const auto& [name, c] : acc["per_category"].items())
          summary += "  " + name + " (" + std::to_string(c["n"].get<int64_t>()) + "): exact " +
                     fmt("%.3f", c["exact_match"].get<double>()) + ", ROUGE-L " +
                     fmt("%.3f", c["rouge_l"].get<double>()) + "\n";
    }

    // ---- 6. A/B sheets: base and tuned answer the same filled prompts.
    if (!o.ab_prompts.empty()) {
      const auto templates = read_ab_templates(o.ab_prompts);
      std::vector<AbVars> vars;
      if (!o.ab_vars.empty())
        vars = read_ab_vars(o.ab_vars);
      else
        vars.push_back({});
      std::vector<AbItem> items;
      for (const auto& t : templates)
        for (const auto& v : vars) {
          AbItem item;
          item.id = o.ab_vars.empty() ? t.id : templates.size() == 1 ? v.id : t.id + "/" + v.id;
          item.category = !v.category.empty() ? v.category : t.category;
          item.prompt = fill_prompt_template(
              t.text, v.vars,
              o.ab_vars.empty() ? o.ab_prompts + " template " + t.id : o.ab_vars + " record " + v.id);
          items.push_back(std::move(item));
        }
      for (bool tuned : {false, true}) {
        use_adapter(tuned);
        for (auto& item : items) {
          ojson messages = ojson::array();
          messages.push_back({{"role", "user"}, {"content", item.prompt}});
          (tuned ? item.tuned_answer : item.base_answer) =
              generate_answer(*lm_model, *tok, encode_prompt(*tok, tmpl, messages), ao);
        }
      }
      use_adapter(true);
      write_ab_sheet(items, o.seed, o.ab_out, o.force);
      report["ab_sheet"] = {{"dir", o.ab_out}, {"items", items.size()}, {"seed", o.seed}};
      summary += "A/B sheet: " + std::to_string(items.size()) + " items in " + o.ab_out +
                 " (sheet.csv, sheet.html, key.json); after rating: dsft eval --ratings r1.csv r2.csv r3.csv "
                 "--key " +
                 (fs::path(o.ab_out) / "key.json").string() + "\n";
    }

    // ---- 7. Speed of the evaluated model.
    if (data && o.speed_tokens > 0) {
      std::vector<std::vector<int64_t>> prompts;
      for (const auto& q : qa_items) {
        if (static_cast<int64_t>(prompts.size()) >= o.speed_prompts) break;
        prompts.push_back(encode_prompt(*tok, tmpl, q.prompt));
      }
      for (const auto& m : mc_items) {
        if (static_cast<int64_t>(prompts.size()) >= o.speed_prompts) break;
        prompts.push_back(encode_prompt(*tok, tmpl, m.prompt));
      }
      if (prompts.empty()) {
        // Text records only: their first tokens are the prompts.
        train::DatasetOptions dopt;
        dopt.max_seq_length = 64;
        dopt.cache_dir = "";
        dopt.num_threads = 1;
        const auto recs = build_lm_records(*data, *tok, tmpl, dopt);
        for (const auto& s : recs.records()) {
          if (static_cast<int64_t>(prompts.size()) >= o.speed_prompts) break;
          prompts.emplace_back(s.ids.begin(), s.ids.end());
        }
      }
      const int64_t max_pos = lm_model->config().max_position_embeddings;
      for (auto& p : prompts)
        if (max_pos > 0 && static_cast<int64_t>(p.size()) + o.speed_tokens > max_pos)
          p.resize(static_cast<size_t>(std::max<int64_t>(1, max_pos - o.speed_tokens)));
      use_adapter(true);
      const SpeedResult sp = measure_speed(*lm_model, prompts, o.speed_tokens, device);
      report["speed"] = to_json(sp);
      summary += "speed (" + sp.device + ", " + std::to_string(sp.prompts) + " prompts, " +
                 std::to_string(o.speed_tokens) + " new tokens each): prefill " +
                 fmt("%.0f", sp.prefill_tokens_per_s) + " tokens/s, decode " +
                 fmt("%.1f", sp.decode_tokens_per_s) + " tokens/s, first token " +
                 fmt("%.1f", sp.time_to_first_token_ms) + " ms, peak memory " +
                 util::format_bytes(static_cast<double>(sp.peak_memory_bytes)) + " (" +
                 sp.peak_memory_source + ")\n";
    }
  }

  // ---- 8. Returned ratings.
  if (rating) {
    report["ab"] = aggregate_ratings(o.key_path, o.ratings);
    summary += ratings_summary(report["ab"], o.ratings.size());
  }

  // ---- 9. Training curves, gates, files.
  std::vector<nlohmann::json> metrics;
  const std::string metrics_path = !o.metrics_path.empty() ? o.metrics_path : run.metrics_path;
  if (!o.metrics_path.empty() && !fs::is_regular_file(o.metrics_path))
    throw Error("--metrics file " + o.metrics_path + " does not exist");
  if (!metrics_path.empty() && (!o.report_html.empty())) metrics = read_metrics_jsonl(metrics_path);
  if (!metrics_path.empty()) report["training"] = {{"metrics_path", metrics_path}};

  EvalOutcome out;
  if (!gates.empty()) {
    const auto results = evaluate_gates(gates, gate_values(report));
    report["gates"] = nlohmann::json::array();
    for (const auto& r : results) {
      report["gates"].push_back({{"expr", r.gate.expr},
                                 {"metric", r.gate.metric},
                                 {"op", r.gate.op},
                                 {"threshold", r.gate.threshold},
                                 {"value", r.value},
                                 {"passed", r.passed}});
      summary += "gate " + r.gate.expr + ": " + (r.passed ? "passed" : "FAILED") + " (" + r.gate.metric +
                 " = " + fmt("%.6g", r.value) + ")\n";
    }
    out.gate_failure = first_failure(results);
  }
  if (!o.predictions_path.empty()) {
    std::string lines;
    for (const auto& row : prediction_rows) lines += row.dump() + "\n";
    write_report_file(o.predictions_path, lines);
    summary += "predictions: " + o.predictions_path + "\n";
  }
  const std::string json_path = !o.report_json.empty()   ? o.report_json
                                : !o.report_html.empty() ? json_path_beside(o.report_html)
                                                         : "";
  if (!json_path.empty()) write_report_file(json_path, report.dump(2) + "\n");
  if (!o.report_html.empty()) write_report_file(o.report_html, render_report_html(report, metrics));
  if (!o.report_html.empty())
    summary += "report: " + o.report_html + " and " + json_path + "\n";
  else if (!json_path.empty())
    summary += "report: " + json_path + "\n";
  out.report = std::move(report);
  out.summary = std::move(summary);
  return out;
}

}  // namespace dsft::eval
