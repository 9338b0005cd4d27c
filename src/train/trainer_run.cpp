// run(): one training run from a resolved config to an adapter (or a full model) in output_dir,
// with checkpoints that resume exactly (weights, optimizer, schedule, loss scaler, early stopping,
// RNG, data position) and a checkpoint on Ctrl-C / SIGTERM.
#include <dlfcn.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsft/model/load.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/peft/inject.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"
#include "dsft/train/checkpoints.h"
#include "dsft/train/early_stopping.h"
#include "dsft/train/grad.h"
#include "dsft/train/metrics.h"
#include "dsft/train/optimizer.h"
#include "dsft/train/rng.h"
#include "dsft/train/schedule.h"
#include "dsft/train/signals.h"
#include "dsft/train/trainer.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "dsft/util/progress.h"
#include "dsft/util/strings.h"

namespace dsft::train {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string sci(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

// The token cache lives beside the run directories (runs/.cache/tokens for runs/<name>): it holds
// tokenised private data, so it stays where the runs are rather than in a shared cache.
std::string token_cache_dir(const std::string& output_dir) {
  fs::path out = fs::absolute(fs::path(output_dir)).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();
  return (out.parent_path() / ".cache" / "tokens").string();
}

void log_stats(const std::string& what, const DatasetStats& s) {
  util::log_info(what + ": " + std::to_string(s.records) + " records -> " + std::to_string(s.samples) +
                 " samples, " + std::to_string(s.tokens) + " tokens (" + std::to_string(s.target_tokens) +
                 " targets); truncated " + std::to_string(s.truncated) + ", dropped without targets " +
                 std::to_string(s.dropped_empty) + (s.from_cache ? " (token cache)" : ""));
}

// The eval_loss recorded at step 0 by the run a resumed run continues (for the summary).
std::optional<double> initial_eval_from_metrics(const std::string& path) {
  if (!util::path_exists(path)) return std::nullopt;
  std::istringstream in(util::read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("step", -1) == 0 && j.contains("eval_loss") && j["eval_loss"].is_number())
      return j["eval_loss"].get<double>();
  }
  return std::nullopt;
}

torch::Dtype compute_dtype(const TrainConfig& cfg) {
  return cfg.bf16 ? torch::kBFloat16 : cfg.fp16 ? torch::kFloat16 : torch::kFloat32;
}

// libtorch on the CPU runs two thread pools: its OpenMP pool (element-wise ops, and in bf16/fp16
// every matmul through oneDNN, the LoRA products included) and, for fp32 matmuls, OpenBLAS's own
// pool. Each busy-waits after its work, so on a machine with few cores the two take the cores
// from each other (measured on 2 cores: 2.6x slower fp32 steps, 4-5x slower bf16 steps). The pool
// that does the heavy work keeps every core; the other gets one thread:
//   bf16/fp16: OpenBLAS -> 1 thread (hardly any fp32 product is left to it);
//   fp32:      libtorch's intra-op pool -> 1 thread, OpenBLAS keeps its threads for the matmuls.
// With OMP_WAIT_POLICY=passive the OpenMP pool sleeps instead of spinning and nothing is changed;
// libblas.so.3 may be another BLAS without openblas_set_num_threads, then nothing changes either.
void balance_cpu_thread_pools(torch::Dtype dtype, const torch::Device& device) {
  if (!device.is_cpu()) return;
  using SetThreads = void (*)(int);
  using GetThreads = int (*)();
  auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  auto* get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (!set || !get) return;
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  if (wait && (std::string(wait) == "passive" || std::string(wait) == "PASSIVE")) return;
  if (dtype != torch::kFloat32) {
    set(1);
    util::log_debug("OpenBLAS limited to one thread (compute dtype " + std::string(c10::toString(dtype)) +
                    ")");
  } else if (get() > 1 && at::get_num_threads() > 1) {
    at::set_num_threads(1);
    util::log_debug("fp32 matmuls on OpenBLAS's " + std::to_string(get()) +
                    " threads; element-wise ops on one thread");
  }
}

void copy_tokenizer_files(const std::string& from, const std::string& to) {
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                           "special_tokens_map.json", "added_tokens.json"}) {
    const fs::path src = fs::path(from) / name;
    if (fs::is_regular_file(src))
      util::write_file_atomic((fs::path(to) / name).string(), util::read_file(src.string()));
  }
}

}  // namespace

TrainResult run(const TrainConfig& cfg, const RunOptions& ro) {
  TrainResult result;
  // The default level leaves the command line's --log-level in charge.
  if (cfg.log_level != "info") util::set_log_level(util::parse_log_level(cfg.log_level));
  const std::string device_name = resolve_device(cfg.device);
  const torch::Device device(device_name);
  const torch::Dtype dtype = compute_dtype(cfg);
  const bool lora = cfg.finetuning_type != FinetuningType::full;

  // 1. Nothing is loaded before the plan says the run fits.
  const MemoryPlan plan = plan_for(cfg);
  util::log_debug(format_memory_plan(plan));
  require_fits(plan, cfg);
  ensure_model(cfg);

  // 2. The run directory: locked, resolved config, resume point.
  util::make_private_dir(cfg.output_dir);
  RunDirLock lock(cfg.output_dir);
  CheckpointManager ckpts(cfg.output_dir);
  const std::optional<CheckpointInfo> resume = ckpts.resolve_resume(cfg.resume_from_checkpoint);
  TrainerState st;
  st.metric_for_best_model = cfg.metric_for_best_model;
  st.config_hash = config_hash(cfg);
  if (resume) {
    st = read_trainer_state(resume->path);
    if (st.config_hash != config_hash(cfg))
      throw Error(resume->path + " was written by a run configured differently (config_hash " +
                  st.config_hash + " vs " + config_hash(cfg) +
                  "); resume with the same model, data and optimisation keys, or start a fresh output_dir");
  }
  const std::string config_yaml = to_yaml(cfg);
  util::write_file_atomic((fs::path(cfg.output_dir) / "config.yaml").string(), config_yaml);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));

  // 3. Tokenizer, template, data.
  auto tok = text::load_tokenizer(cfg.model_name_or_path);
  const text::ChatTemplate tmpl = text::ChatTemplate::resolve(cfg.chat_template, cfg.model_name_or_path);
  DatasetOptions dopt;
  dopt.max_seq_length = cfg.max_seq_length;
  dopt.packing = cfg.packing;
  dopt.train_on_inputs = cfg.train_on_inputs;
  dopt.cache_dir = token_cache_dir(cfg.output_dir);
  TokenizedDataset train_data = TokenizedDataset::build(cfg.train_files(), *tok, tmpl, dopt);
  TokenizedDataset eval_data;
  const uint64_t data_seed = static_cast<uint64_t>(cfg.resolved_data_seed());
  if (cfg.val_size > 0) {
    auto parts = train_data.split(cfg.val_size, data_seed);
    train_data = std::move(parts.first);
    eval_data = std::move(parts.second);
  } else if (!cfg.validation_file.empty()) {
    eval_data = TokenizedDataset::build({cfg.validation_file}, *tok, tmpl, dopt);
  }
  std::optional<TokenizedDataset> mix_data;
  if (!cfg.mix_dataset.empty()) mix_data = TokenizedDataset::build({cfg.mix_dataset}, *tok, tmpl, dopt);
  log_stats("training data", train_data.stats());
  if (cfg.has_evaluation()) log_stats("validation data", eval_data.stats());
  if (mix_data) log_stats("mixed-in data", mix_data->stats());
  if (train_data.samples().empty())
    throw Error("no training samples left after tokenisation (see the counts above)");
  const bool evaluating = cfg.has_evaluation() && !eval_data.samples().empty();
  if (cfg.has_evaluation() && !evaluating)
    util::log_warn(
        "the validation set is empty: evaluation, early stopping and best-checkpoint tracking are off");
  const int32_t pad_id = tok->pad_id.value_or(tok->eos_id.value_or(0));

  // 4. The model and what trains.
  model::LoadOptions lo;
  lo.dtype = dtype;
  lo.device = device;
  model::CausalLM lm = model::load_model(cfg.model_name_or_path, lo);
  balance_cpu_thread_pools(dtype, device);
  peft::LoraConfig lc = lora_config_from(cfg);
  if (cfg.finetuning_type == FinetuningType::qlora) {
    peft::Nf4Options nf4;
    nf4.block_size = cfg.quant_block_size;
    nf4.double_quant = cfg.double_quant;
    const auto format =
        cfg.quantization == Quantization::int8 ? peft::BaseFormat::int8 : peft::BaseFormat::nf4;
    const auto done = peft::quantize_linears(*lm, format, nf4, {"lm_head"});
    util::log_info("quantised " + std::to_string(done.size()) + " linear layers to " +
                   to_string(cfg.quantization));
  }
  if (lora) {
    const auto inj = peft::inject_lora(*lm, lc);
    lc = inj.config;
    // bf16/fp16 runs compute the adapter's products in that dtype, as autocast does (the factors
    // and their optimizer states stay fp32).
    if (dtype != torch::kFloat32)
      peft::for_each_linear(*lm,
                            [](const std::string&, peft::LinearImpl& lin) { lin.set_lora_autocast(true); });
    util::log_info("LoRA r=" + std::to_string(cfg.r) + " on " + std::to_string(inj.adapted.size()) +
                   " layers (" + util::join(lc.target_modules, ", ") + ")");
  } else {
    for (auto& p : lm->parameters()) p.set_requires_grad(true);
  }
  std::vector<NamedParam> trainable;
  std::vector<torch::Tensor> trainable_tensors;
  for (const auto& p : lm->named_parameters(/*recurse=*/true))
    if (p.value().requires_grad()) {
      trainable.push_back({p.key(), p.value()});
      trainable_tensors.push_back(p.value());
    }
  if (trainable.empty()) throw Error("nothing to train: no parameter requires a gradient");
  const auto count = peft::count_parameters(*lm);
  util::log_info("trainable parameters: " + std::to_string(count.trainable) + " of " +
                 std::to_string(count.total) + " (" +
                 fixed(100.0 * count.trainable / std::max<int64_t>(1, count.total), 3) + "%)");
  lm->train();

  // 5. Optimizer, schedule, scaler, early stopping, data order.
  AdamWOptions aopt;
  aopt.lr = cfg.learning_rate;
  aopt.beta1 = cfg.adam_beta1;
  aopt.beta2 = cfg.adam_beta2;
  aopt.eps = cfg.adam_epsilon;
  AdamW optimizer(make_param_groups(trainable, cfg.weight_decay), aopt);
  DataLoader loader(train_data, cfg.per_device_train_batch_size, data_seed, pad_id,
                    mix_data ? &*mix_data : nullptr, cfg.mix_ratio);
  const int64_t batches_per_epoch = std::max<int64_t>(1, loader.batches_per_epoch());
  const int64_t accum = cfg.gradient_accumulation_steps;
  const int64_t total_steps =
      cfg.max_steps > 0
          ? cfg.max_steps
          : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(cfg.num_train_epochs * batches_per_epoch /
                                                                static_cast<double>(accum))));
  result.total_steps = total_steps;
  LrSchedule schedule(cfg.lr_scheduler_type, cfg.learning_rate, cfg.num_warmup_steps(total_steps),
                      total_steps);
  LossScaler scaler(cfg.fp16);
  const bool greater_is_better = cfg.greater_is_better;
  EarlyStopping early(cfg.early_stopping_patience, cfg.early_stopping_threshold, greater_is_better);

  const std::string metrics_path = (fs::path(cfg.output_dir) / "metrics.jsonl").string();
  if (resume) {
    load_into((fs::path(resume->path) / kWeightsFile).string(), trainable);
    optimizer.load((fs::path(resume->path) / kOptimizerFile).string());
    schedule.set_step(st.lr_scheduler_step);
    scaler.set_state(st.loss_scaler);
    early.set_state(st.early_stopping);
    loader.seek(st.data.epoch, st.data.index);
    result.initial_eval_loss = initial_eval_from_metrics(metrics_path);
    util::log_info("resuming from " + resume->path + " at step " + std::to_string(st.global_step));
  }
  // Fresh runs start an empty metrics file; resumed ones drop what was logged after the checkpoint.
  MetricsWriter metrics(metrics_path, resume ? st.global_step : -1);

  const LossOptions loss_opt{cfg.gradient_checkpointing, kLossChunkTokens};
  auto run_eval = [&]() {
    return evaluate(*lm, eval_data.samples(), cfg.per_device_eval_batch_size, pad_id, device);
  };
  if (evaluating && !resume) {
    const double l0 = run_eval();
    result.initial_eval_loss = l0;
    MetricsRecord r;
    r.step = 0;
    r.eval_loss = l0;
    metrics.write(r);
    util::log_info("initial validation loss " + fixed(l0, 4) + ", perplexity " + fixed(std::exp(l0), 2));
  }

  // Everything above may draw random numbers (LoRA initialisation); a resumed run continues the
  // generator exactly where the checkpoint left it.
  if (resume) restore_rng(st.rng);

  auto save_checkpoint = [&]() {
    st.lr_scheduler_step = schedule.step();
    st.loss_scaler = scaler.state();
    st.early_stopping = early.state();
    st.data = {loader.epoch(), loader.index()};
    st.rng = capture_rng();
    st.config_hash = config_hash(cfg);
    st.metric_for_best_model = cfg.metric_for_best_model;
    std::function<void(const std::string&)> extra;
    if (lora)
      extra = [&](const std::string& dir) { peft::save_adapter(*lm, lc, dir, cfg.model_name_or_path); };
    const std::string path = ckpts.save(st, trainable, &optimizer, config_yaml, extra);
    result.last_checkpoint = path;
    for (const auto& gone : ckpts.rotate(cfg.save_total_limit, st.best_model_checkpoint))
      util::log_debug("removed old checkpoint " + gone);
    return path;
  };

  // 6. The loop.
  StopSignal stop;
  util::ProgressBar bar(total_steps, st.global_step, 1, ro.out, ro.progress_tty);
  const int64_t eval_every = cfg.resolved_eval_steps();
  double log_loss_sum = 0.0;
  int64_t log_targets = 0, log_tokens = 0;
  double log_norm = 0.0;
  bool log_skipped = false;
  auto log_t0 = Clock::now();
  const auto run_t0 = Clock::now();
  const int64_t start_step = st.global_step;
  while (st.global_step < total_steps) {
    std::vector<Batch> micro;
    micro.reserve(static_cast<size_t>(accum));
    for (int64_t i = 0; i < accum; ++i) micro.push_back(loader.next());
    const double lr = schedule.lr();
    const StepLoss sl = accumulate_gradients(*lm, micro, device, loss_opt, scaler.scale());
    const double norm = global_grad_norm(trainable_tensors, 1.0 / scaler.scale());
    const bool finite = std::isfinite(norm) && std::isfinite(sl.loss);
    if (finite) {
      optimizer.set_lr(lr);
      optimizer.step(clip_coefficient(norm, cfg.max_grad_norm) / scaler.scale());
      schedule.advance();
    }
    scaler.update(!finite);
    optimizer.zero_grad();
    ++st.global_step;
    st.total_tokens += sl.tokens;
    st.epoch = static_cast<double>(st.global_step * accum) / static_cast<double>(batches_per_epoch);
    log_loss_sum += sl.loss * static_cast<double>(sl.target_tokens);
    log_targets += sl.target_tokens;
    log_tokens += sl.tokens;
    log_norm = norm;
    log_skipped = log_skipped || !finite;
    if (!finite) {
      bar.finish();  // a log line never lands in the middle of the progress line
      util::log_warn("step " + std::to_string(st.global_step) + ": non-finite gradients" +
                     (scaler.enabled()
                          ? ", step skipped and loss scale lowered to " + fixed(scaler.scale(), 0)
                          : ", step skipped"));
    }

    const bool last = st.global_step == total_steps;
    if (st.global_step % cfg.logging_steps == 0 || last) {
      const double dt = seconds_since(log_t0);
      MetricsRecord r;
      r.step = st.global_step;
      r.epoch = st.epoch;
      r.loss = log_targets > 0 ? log_loss_sum / static_cast<double>(log_targets) : std::nan("");
      r.lr = lr;
      r.grad_norm = log_norm;
      r.tokens_per_s = dt > 0 ? static_cast<double>(log_tokens) / dt : 0.0;
      r.mem_bytes = peak_rss_bytes();
      r.skipped = log_skipped;
      metrics.write(r);
      result.final_train_loss = r.loss;
      bar.update(
          st.global_step,
          {{"loss", fixed(*r.loss, 4)}, {"lr", sci(lr)}, {"tok/s", util::format_count(*r.tokens_per_s)}});
      log_loss_sum = 0.0;
      log_targets = log_tokens = 0;
      log_skipped = false;
      log_t0 = Clock::now();
    }

    bool new_best = false;
    if (evaluating && ((eval_every > 0 && st.global_step % eval_every == 0) || last)) {
      const double el = run_eval();
      result.final_eval_loss = el;
      MetricsRecord r;
      r.step = st.global_step;
      r.epoch = st.epoch;
      r.eval_loss = el;
      metrics.write(r);
      const double metric = el;  // eval_loss (perplexity orders the same way)
      if (early.update(metric)) {
        new_best = true;
        st.best_metric = metric;
        st.best_model_checkpoint = ckpts.path_for(st.global_step);
      }
      bar.finish();
      util::log_info("step " + std::to_string(st.global_step) + ": validation loss " + fixed(el, 4) +
                     ", perplexity " + fixed(std::exp(el), 2) + (new_best ? " (best so far)" : ""));
    }
    const bool stopping_early = early.should_stop();
    const bool interrupted = stop.requested();
    // The best checkpoint is always on disk, whatever save_steps says.
    if ((cfg.save_steps > 0 && st.global_step % cfg.save_steps == 0) || new_best || last || stopping_early ||
        interrupted)
      save_checkpoint();
    if (interrupted) {
      bar.finish();
      result.interrupted = true;
      util::log_warn(std::string(stop.signal_number() == SIGTERM ? "SIGTERM" : "interrupt") +
                     " received: checkpoint written to " + result.last_checkpoint +
                     "; continue with resume_from_checkpoint=auto");
      break;
    }
    if (stopping_early) {
      result.early_stopped = true;
      util::log_info("early stopping: no improvement of " + cfg.metric_for_best_model + " in " +
                     std::to_string(cfg.early_stopping_patience) + " evaluations");
      break;
    }
  }
  bar.finish();
  result.global_step = st.global_step;
  result.best_checkpoint = st.best_model_checkpoint;
  if (result.interrupted) return result;
  if (evaluating && !result.final_eval_loss) {
    // A resumed run that had nothing left to do still reports where the model stands.
    result.final_eval_loss = run_eval();
  }

  // 7. The product of the run.
  if (cfg.load_best_model_at_end && !st.best_model_checkpoint.empty() &&
      util::path_exists(st.best_model_checkpoint)) {
    load_into((fs::path(st.best_model_checkpoint) / kWeightsFile).string(), trainable);
    util::log_info("loaded the best checkpoint " + st.best_model_checkpoint);
    if (evaluating) result.final_eval_loss = st.best_metric;
  }
  if (lora) {
    result.output = (fs::path(cfg.output_dir) / "adapter").string();
    peft::save_adapter(*lm, lc, result.output, cfg.model_name_or_path);
  } else {
    result.output = (fs::path(cfg.output_dir) / "model").string();
    util::make_private_dir(result.output);
    model::save_model(*lm, result.output);
    copy_tokenizer_files(cfg.model_name_or_path, result.output);
  }

  const double secs = seconds_since(run_t0);
  std::fprintf(ro.out, "trained %lld steps in %s", static_cast<long long>(st.global_step - start_step),
               util::format_duration(secs).c_str());
  if (result.final_train_loss) std::fprintf(ro.out, ", final training loss %.4f", *result.final_train_loss);
  std::fprintf(ro.out, "%s\n", result.early_stopped ? " (stopped early)" : "");
  if (result.initial_eval_loss && result.final_eval_loss)
    std::fprintf(ro.out, "validation perplexity %.2f -> %.2f (loss %.4f -> %.4f)\n",
                 std::exp(*result.initial_eval_loss), std::exp(*result.final_eval_loss),
                 *result.initial_eval_loss, *result.final_eval_loss);
  std::fprintf(ro.out, "%s written to %s\n", lora ? "PEFT adapter" : "model", result.output.c_str());
  return result;
}

}  // namespace dsft::train
