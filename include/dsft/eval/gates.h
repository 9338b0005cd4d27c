// Pass/fail gates on evaluation metrics: `ppl_drop>=0.15,exact_match>=0.6`. A gate names a metric
// of the report, an operator (>=, >, <=, <, ==) and a number; `dsft eval --gate` exits 1 when one
// fails. Torch-free.
#pragma once
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace dsft::eval {

struct Gate {
  std::string expr;  // as written, trimmed ("ppl_drop>=0.15")
  std::string metric;
  std::string op;  // ">=", ">", "<=", "<", "=="
  double threshold = 0.0;
};

// Every metric a gate may name, with what it means (for --help and docs).
const std::vector<std::pair<std::string, std::string>>& gate_metrics();

// Parses comma-separated gates (and several --gate options joined). A malformed gate or an unknown
// metric is a dsft::UsageError naming it (and the closest metric name).
std::vector<Gate> parse_gates(const std::vector<std::string>& specs);

struct GateResult {
  Gate gate;
  double value = 0.0;
  bool passed = false;
};

// The gate metrics a report holds (report.json layout of report.h): ppl, base_ppl, ppl_drop,
// accuracy, speed and A/B figures, whichever were computed.
std::map<std::string, double> gate_values(const nlohmann::json& report);

// Names the gates whose metric is not in `available` (a dsft::UsageError: the run does not compute
// it, with what would).
void require_available(const std::vector<Gate>& gates, const std::vector<std::string>& available);

// Evaluates every gate against `values`; a metric missing from `values` is a dsft::UsageError.
std::vector<GateResult> evaluate_gates(const std::vector<Gate>& gates,
                                       const std::map<std::string, double>& values);

// "gate ppl_drop>=0.15 failed: ppl_drop = 0.0312" for the first failed gate; "" when all passed.
std::string first_failure(const std::vector<GateResult>& results);

}  // namespace dsft::eval
