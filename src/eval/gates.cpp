// Gates: parsing `metric op number` lists, reading the metrics a report holds, and deciding
// pass/fail with a one-line reason.
#include "dsft/eval/gates.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::eval {

namespace {

std::vector<std::string> metric_names() {
  std::vector<std::string> names;
  for (const auto& m : gate_metrics()) names.push_back(m.first);
  return names;
}

bool known_metric(const std::string& name) {
  for (const auto& m : gate_metrics())
    if (m.first == name) return true;
  return false;
}

std::string format_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// A number at `j[key]` (nested keys separated by '.'), if present.
const nlohmann::json* find_number(const nlohmann::json& j, const std::string& dotted) {
  const nlohmann::json* cur = &j;
  for (const auto& part : util::split(dotted, '.')) {
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(part);
    if (it == cur->end()) return nullptr;
    cur = &*it;
  }
  return cur->is_number() ? cur : nullptr;
}

void put(std::map<std::string, double>& out, const std::string& name, const nlohmann::json& report,
         std::initializer_list<const char*> paths) {
  for (const char* p : paths)
    if (const auto* v = find_number(report, p)) {
      out[name] = v->get<double>();
      return;
    }
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& gate_metrics() {
  static const std::vector<std::pair<std::string, std::string>> kMetrics = {
      {"ppl_drop",
       "relative perplexity drop of the tuned model, (base_ppl - ppl) / base_ppl (needs --baseline)"},
      {"ppl", "perplexity of the evaluated model (base + adapter with --adapter, else the base)"},
      {"base_ppl", "perplexity of the base model (with --adapter: needs --baseline)"},
      {"loss", "mean token loss of the evaluated model"},
      {"base_loss", "mean token loss of the base model"},
      {"exact_match", "share of QA answers equal to the reference"},
      {"normalized_match", "share of QA answers equal to the reference after normalisation"},
      {"contains", "share of QA answers containing the normalised reference"},
      {"rouge_l", "mean ROUGE-L F1 of the QA answers"},
      {"mc_accuracy", "share of multiple-choice items whose most likely option is the answer"},
      {"win_rate", "share of A/B ratings preferring the tuned model (--ratings)"},
      {"tie_rate", "share of A/B ratings that are ties (--ratings)"},
      {"loss_rate", "share of A/B ratings preferring the base model (--ratings)"},
      {"kappa", "Fleiss' kappa of the raters (--ratings)"},
      {"prefill_tokens_per_s", "prompt tokens processed per second"},
      {"decode_tokens_per_s", "tokens generated per second after the first"},
      {"time_to_first_token_ms", "milliseconds from the prompt to the first generated token"},
      {"peak_memory_mb", "peak memory in MiB (CPU: resident set; CUDA: device memory in use)"},
  };
  return kMetrics;
}

std::vector<Gate> parse_gates(const std::vector<std::string>& specs) {
  std::vector<Gate> gates;
  for (const auto& spec : specs) {
    for (const auto& piece : util::split(spec, ',')) {
      const std::string expr = util::trim(piece);
      if (expr.empty()) continue;
      Gate g;
      g.expr = expr;
      size_t pos = std::string::npos, len = 0;
      for (const char* op : {">=", "<=", "==", ">", "<"}) {
        const size_t p = expr.find(op);
        if (p != std::string::npos) {
          pos = p;
          len = std::char_traits<char>::length(op);
          g.op = op;
          break;
        }
      }
      if (pos == std::string::npos)
        throw UsageError("--gate " + expr +
                         " has no comparison (write metric>=value; operators: >=, >, <=, <, ==)");
      g.metric = util::trim(expr.substr(0, pos));
      const std::string number = util::trim(expr.substr(pos + len));
      char* end = nullptr;
      g.threshold = std::strtod(number.c_str(), &end);
      if (number.empty() || end != number.c_str() + number.size() || !std::isfinite(g.threshold))
        throw UsageError("--gate " + expr + ": '" + number + "' is not a number");
      if (g.metric.empty()) throw UsageError("--gate " + expr + " names no metric");
      if (!known_metric(g.metric))
        throw UsageError("--gate " + expr + ": unknown metric '" + g.metric + "' (did you mean " +
                         util::closest_match(g.metric, metric_names()) + "? see dsft eval --help)");
      gates.push_back(g);
    }
  }
  return gates;
}

std::map<std::string, double> gate_values(const nlohmann::json& report) {
  std::map<std::string, double> out;
  const bool has_base = find_number(report, "perplexity.base.ppl") != nullptr;
  const bool has_tuned = find_number(report, "perplexity.tuned.ppl") != nullptr;
  if (has_tuned) {
    put(out, "ppl", report, {"perplexity.tuned.ppl"});
    put(out, "loss", report, {"perplexity.tuned.loss"});
  } else if (has_base) {
    put(out, "ppl", report, {"perplexity.base.ppl"});
    put(out, "loss", report, {"perplexity.base.loss"});
  }
  if (has_base) {
    put(out, "base_ppl", report, {"perplexity.base.ppl"});
    put(out, "base_loss", report, {"perplexity.base.loss"});
  }
  if (has_base && has_tuned)
    if (const auto* rc = find_number(report, "perplexity.relative_change"))
      out["ppl_drop"] = -rc->get<double>();
  if (find_number(report, "accuracy.n") && report["accuracy"]["n"].get<double>() > 0) {
    put(out, "exact_match", report, {"accuracy.exact_match"});
    put(out, "normalized_match", report, {"accuracy.normalized_match"});
    put(out, "contains", report, {"accuracy.contains"});
    put(out, "rouge_l", report, {"accuracy.rouge_l"});
  }
  put(out, "mc_accuracy", report, {"accuracy.multiple_choice.accuracy"});
  put(out, "prefill_tokens_per_s", report, {"speed.prefill_tokens_per_s"});
  put(out, "decode_tokens_per_s", report, {"speed.decode_tokens_per_s"});
  put(out, "time_to_first_token_ms", report, {"speed.time_to_first_token_ms"});
  if (const auto* m = find_number(report, "speed.peak_memory_bytes"))
    out["peak_memory_mb"] = m->get<double>() / (1024.0 * 1024.0);
  // aggregate_ratings: pooled rates over every rating, Fleiss' kappa (null when undefined).
  put(out, "win_rate", report, {"ab.pooled.win_rate"});
  put(out, "tie_rate", report, {"ab.pooled.tie_rate"});
  put(out, "loss_rate", report, {"ab.pooled.loss_rate"});
  put(out, "kappa", report, {"ab.fleiss_kappa"});
  return out;
}

void require_available(const std::vector<Gate>& gates, const std::vector<std::string>& available) {
  for (const auto& g : gates) {
    bool found = false;
    for (const auto& a : available) found = found || a == g.metric;
    if (!found)
      throw UsageError(
          "--gate " + g.expr + ": this run does not compute " + g.metric +
          (available.empty() ? std::string(" (it computes no gate metric)")
                             : " (it computes " + util::join(available, ", ") + ")") +
          (g.metric == "ppl_drop" || g.metric == "base_ppl" ? "; add --baseline with --adapter" : ""));
  }
}

std::vector<GateResult> evaluate_gates(const std::vector<Gate>& gates,
                                       const std::map<std::string, double>& values) {
  std::vector<std::string> available;
  for (const auto& [k, v] : values) available.push_back(k);
  require_available(gates, available);
  std::vector<GateResult> out;
  for (const auto& g : gates) {
    GateResult r;
    r.gate = g;
    r.value = values.at(g.metric);
    const double v = r.value, t = g.threshold;
    if (g.op == ">=")
      r.passed = v >= t;
    else if (g.op == ">")
      r.passed = v > t;
    else if (g.op == "<=")
      r.passed = v <= t;
    else if (g.op == "<")
      r.passed = v < t;
    else
      r.passed = v == t;
    if (std::isnan(v)) r.passed = false;
    out.push_back(r);
  }
  return out;
}

std::string first_failure(const std::vector<GateResult>& results) {
  for (const auto& r : results)
    if (!r.passed) return "gate " + r.gate.expr + " failed: " + r.gate.metric + " = " + format_value(r.value);
  return "";
}

}  // namespace dsft::eval
