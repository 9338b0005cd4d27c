// The evaluation report: report.json (the one source of truth) rendered as a self-contained
// report.html (no scripts, no external files) with inline SVG charts: the training loss and
// learning-rate curves from a run's metrics.jsonl, perplexity before/after, accuracy per category,
// and speed. Torch-free.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dsft::eval {

// Reads a run's metrics.jsonl (one JSON object per logged step: step, loss, lr, ...; eval rows
// with eval_loss). Lines that are not JSON objects are an error naming the line.
std::vector<nlohmann::json> read_metrics_jsonl(const std::string& path);

// The report.json layout the renderer understands (every section optional):
// {
//   "model": "...", "adapter": "...", "data": "...", "created": "ISO-8601",
//   "perplexity": {"base": {"ppl": .., "loss": .., "tokens": ..}, "tuned": {...}, "relative_change": -0.3},
//   "accuracy": {"n": .., "exact_match": .., "normalized_match": .., "contains": .., "rouge_l": ..,
//                "multiple_choice": {"n": .., "accuracy": ..},
//                "per_category": {"<name>": {"n": .., "exact_match": .., ...}}},
//   "baseline_accuracy": {... as "accuracy", for the base model ...},
//   "speed": {"prefill_tokens_per_s": .., "decode_tokens_per_s": .., "time_to_first_token_ms": ..,
//             "peak_memory_bytes": .., <any other key: shown as is>},
//   "ab_sheet": {"dir": "...", "items": .., "seed": ..},
//   "ab": {... aggregate_ratings output ...},
//   "gates": [{"expr": "ppl_drop>=0.15", "metric": .., "value": .., "passed": true}],
//   "training": {"metrics_path": "..."}
// }
// `metrics` are the rows of metrics.jsonl (may be empty: the curves section then says so).
// Missing sections, values of the wrong type and nulls (non-finite numbers) render as a sentence
// or "n/a", never as an error. Every chart is an <svg class="chart" data-chart="<id>"> with ids
// loss, lr, perplexity, accuracy, accuracy-baseline and ab.
std::string render_report_html(const nlohmann::json& report, const std::vector<nlohmann::json>& metrics);

}  // namespace dsft::eval
