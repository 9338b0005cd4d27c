// Checkpoint folders: trainer state JSON, atomic save (incl. a crash mid-write), permissions,
// rotation that keeps the best, resume resolution, and an exact resume of a small training run.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>

#include "dsft/train/checkpoints.h"
#include "dsft/train/schedule.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace fs = std::filesystem;
using namespace dsft::train;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("dsft_train_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 0777;
}

TrainerState sample_state(int64_t step) {
  TrainerState s;
  s.global_step = step;
  s.epoch = 1.25;
  s.data = {1, 37};
  s.lr_scheduler_step = step;
  s.total_tokens = 123456789012;
  s.loss_scaler = {32768.0, 17};
  s.early_stopping = {true, 1.5, 2};
  s.best_metric = 1.5;
  s.best_model_checkpoint = "runs/x/checkpoint-4";
  s.metric_for_best_model = "eval_loss";
  s.rng = {{1, 2, 3, 250}, {{9, 8}, {7}}};
  s.config_hash = "00112233aabbccdd";
  return s;
}

std::vector<NamedParam> sample_weights() {
  return {{"model.layers.0.self_attn.q_proj.lora_A.weight", torch::randn({4, 8})},
          {"model.layers.0.self_attn.q_proj.lora_B.weight", torch::randn({8, 4}).to(torch::kBFloat16)},
          {"model.norm.weight", torch::randn({8}).to(torch::kFloat16)}};
}

}  // namespace

TEST(TrainerState, JsonRoundTrip) {
  const TrainerState s = sample_state(8);
  const TrainerState back = trainer_state_from_json(to_json(s), "state.json");
  EXPECT_EQ(to_json(back), to_json(s));
  EXPECT_EQ(back.total_tokens, 123456789012);
  EXPECT_EQ(back.rng.cuda.size(), 2u);
  EXPECT_EQ(back.rng.cpu, (std::vector<uint8_t>{1, 2, 3, 250}));
  TrainerState none = s;
  none.best_metric.reset();
  EXPECT_FALSE(trainer_state_from_json(to_json(none), "s").best_metric.has_value());
}

TEST(TrainerState, MalformedJsonNamesTheField) {
  auto message = [](const std::string& text) {
    try {
      trainer_state_from_json(text, "ckpt/trainer_state.json");
    } catch (const dsft::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message("{").find("ckpt/trainer_state.json"), std::string::npos);
  std::string text = to_json(sample_state(1));
  std::string no_step = text;
  no_step.replace(no_step.find("\"global_step\""), 13, "\"globl_step\"");
  EXPECT_NE(message(no_step).find("global_step"), std::string::npos) << message(no_step);
  std::string wrong = text;
  wrong.replace(wrong.find("\"epoch\": 1.25"), 13, "\"epoch\": \"x\"");
  EXPECT_NE(message(wrong).find("epoch"), std::string::npos) << message(wrong);
}

TEST(Checkpoints, SaveWritesPrivateCompleteFolders) {
  const fs::path dir = temp_dir("ckpt_save");
  CheckpointManager m(dir.string());
  auto weights = sample_weights();
  auto w = torch::randn({2, 2}, torch::requires_grad());
  AdamW opt({{{{"w", w}}, 0.0}}, AdamWOptions{});
  w.mutable_grad() = torch::ones({2, 2});
  opt.step();
  const std::string path = m.save(sample_state(4), weights, &opt, "learning_rate: 0.001\n",
                                  [](const std::string& d) { dsft::util::write_file_atomic(d + "/adapter_config.json", "{}"); });
  EXPECT_EQ(path, m.path_for(4));
  EXPECT_EQ(fs::path(path).filename(), "checkpoint-4");
  EXPECT_EQ(mode_of(path), 0700u);
  for (const char* f : {kTrainerStateFile, kWeightsFile, kOptimizerFile, kConfigFile, "adapter_config.json"}) {
    ASSERT_TRUE(fs::exists(fs::path(path) / f)) << f;
    EXPECT_EQ(mode_of(fs::path(path) / f), 0600u) << f;
  }
  EXPECT_EQ(to_json(read_trainer_state(path)), to_json(sample_state(4)));

  // Weights come back bit-exactly, in their dtypes.
  auto fresh = sample_weights();
  load_into((fs::path(path) / kWeightsFile).string(), fresh);
  for (size_t i = 0; i < weights.size(); ++i) EXPECT_TRUE(torch::equal(fresh[i].param, weights[i].param)) << weights[i].name;
  // A mismatch names the tensor.
  std::vector<NamedParam> other = {{"model.layers.0.self_attn.q_proj.lora_A.weight", torch::zeros({2, 8})}};
  try {
    load_into((fs::path(path) / kWeightsFile).string(), other);
    ADD_FAILURE() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lora_A"), std::string::npos) << e.what();
  }
  // Saving the same step again replaces it.
  TrainerState again = sample_state(4);
  again.total_tokens = 5;
  m.save(again, weights, nullptr, "");
  EXPECT_EQ(read_trainer_state(path).total_tokens, 5);
  EXPECT_FALSE(fs::exists(fs::path(path) / kOptimizerFile));
  ASSERT_EQ(m.list().size(), 1u);
  fs::remove_all(dir);
}

TEST(Checkpoints, CrashMidWriteLeavesNoVisibleCheckpoint) {
  const fs::path dir = temp_dir("ckpt_crash");
  auto weights = sample_weights();
  {
    CheckpointManager m(dir.string());
    m.save(sample_state(2), weights, nullptr, "");
  }
  // A child process dies (no unwinding, no cleanup) in the middle of writing checkpoint-4.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    CheckpointManager m(dir.string());
    m.save(sample_state(4), weights, nullptr, "", [](const std::string& d) {
      std::FILE* f = std::fopen((d + "/partial.bin").c_str(), "wb");
      std::fputs("half", f);
      std::fflush(f);
      ::_exit(7);
    });
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 7);

  bool temp_left = false;
  for (const auto& e : fs::directory_iterator(dir)) temp_left |= e.path().filename().string().rfind(".tmp-checkpoint-4", 0) == 0;
  EXPECT_TRUE(temp_left) << "the crash should have left its temp folder behind";
  EXPECT_FALSE(fs::exists(dir / "checkpoint-4"));

  CheckpointManager after(dir.string());  // a new run cleans up and resumes from the last good one
  ASSERT_EQ(after.list().size(), 1u);
  EXPECT_EQ(after.latest()->step, 2);
  EXPECT_EQ(after.resolve_resume("auto")->step, 2);
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_NE(e.path().filename().string()[0], '.') << e.path();

  // A save that fails with an error also leaves nothing behind.
  EXPECT_THROW(after.save(sample_state(6), weights, nullptr, "",
                          [](const std::string&) { throw dsft::Error("disk full"); }),
               dsft::Error);
  EXPECT_EQ(after.list().size(), 1u);
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  // A folder that is named like a checkpoint but lacks trainer_state.json is not one.
  fs::create_directories(dir / "checkpoint-9");
  EXPECT_EQ(after.latest()->step, 2);
  fs::remove_all(dir);
}

TEST(Checkpoints, RotationKeepsNewestAndBest) {
  auto steps_after = [](int64_t limit, int64_t best_step) {
    const fs::path dir = temp_dir("ckpt_rotate");
    CheckpointManager m(dir.string());
    for (int64_t s : {1, 2, 3, 10, 11}) m.save(sample_state(s), {}, nullptr, "");
    m.rotate(limit, best_step > 0 ? m.path_for(best_step) : "");
    std::vector<int64_t> steps;
    for (const auto& c : m.list()) steps.push_back(c.step);
    fs::remove_all(dir);
    return steps;
  };
  EXPECT_EQ(steps_after(2, 0), (std::vector<int64_t>{10, 11}));  // numeric, not lexical, order
  EXPECT_EQ(steps_after(2, 2), (std::vector<int64_t>{2, 11}));
  EXPECT_EQ(steps_after(3, 2), (std::vector<int64_t>{2, 10, 11}));
  EXPECT_EQ(steps_after(1, 2), (std::vector<int64_t>{2, 11}));  // best and newest both stay
  EXPECT_EQ(steps_after(1, 11), (std::vector<int64_t>{11}));
  EXPECT_EQ(steps_after(0, 0), (std::vector<int64_t>{1, 2, 3, 10, 11}));
}

TEST(Checkpoints, ResolveResume) {
  const fs::path dir = temp_dir("ckpt_resume");
  CheckpointManager m(dir.string());
  EXPECT_FALSE(m.resolve_resume("").has_value());
  EXPECT_FALSE(m.resolve_resume("auto").has_value());  // nothing yet: a fresh start
  m.save(sample_state(3), {}, nullptr, "");
  m.save(sample_state(12), {}, nullptr, "");
  EXPECT_EQ(m.resolve_resume("auto")->step, 12);
  EXPECT_EQ(m.resolve_resume(m.path_for(3))->step, 3);
  EXPECT_THROW(m.resolve_resume((dir / "checkpoint-5").string()), dsft::Error);
  fs::remove_all(dir);
}

TEST(Checkpoints, RunDirLockIsExclusive) {
  const fs::path dir = temp_dir("ckpt_lock");
  {
    RunDirLock a(dir.string());
    EXPECT_THROW(RunDirLock b(dir.string()), dsft::Error);
  }
  EXPECT_NO_THROW(RunDirLock c(dir.string()));
  fs::remove_all(dir);
}

// The pieces a trainer combines, interrupted and resumed, give the uninterrupted result bit for
// bit: weights, optimizer moments, LR schedule position, loss-scaler and RNG state (dropout).
namespace {
struct TinyRun {
  torch::Tensor w = torch::zeros({4, 3}, torch::requires_grad());
  torch::Tensor b = torch::zeros({3}, torch::kBFloat16).requires_grad_();
  AdamW opt{make_param_groups({{"w", w}, {"b", b}}, 0.01), AdamWOptions{1e-2, 0.9, 0.999, 1e-8}};
  LrSchedule sched{SchedulerType::cosine, 1e-2, 2, 8};
  LossScaler scaler{true, 1024.0, 2.0, 0.5, 2};
  std::vector<NamedParam> weights() { return {{"w", w}, {"b", b}}; }
  void step(int64_t i) {
    auto x = torch::randn({5, 4});  // data noise and dropout both draw from the global generator
    auto h = torch::dropout(torch::matmul(x, w) + b.to(torch::kFloat32), 0.3, true);
    auto loss = (h - static_cast<double>(i)).pow(2).mean();
    (loss * scaler.scale()).backward();
    const double norm = global_grad_norm({w, b}, 1.0 / scaler.scale());
    opt.set_lr(sched.lr());
    if (std::isfinite(norm)) opt.step(clip_coefficient(norm, 1.0) / scaler.scale());
    scaler.update(!std::isfinite(norm));
    opt.zero_grad();
    sched.advance();
  }
};
}  // namespace

TEST(Checkpoints, ResumedRunEqualsUninterrupted) {
  torch::manual_seed(0);
  TinyRun straight;
  for (int64_t i = 0; i < 8; ++i) straight.step(i);

  const fs::path dir = temp_dir("ckpt_exact");
  {
    torch::manual_seed(0);
    TinyRun first;
    for (int64_t i = 0; i < 5; ++i) first.step(i);
    TrainerState st;
    st.global_step = 5;
    st.lr_scheduler_step = first.sched.step();
    st.loss_scaler = first.scaler.state();
    st.rng = capture_rng();
    CheckpointManager(dir.string()).save(st, first.weights(), &first.opt, "");
    torch::rand({100});  // the interrupted process goes on drawing numbers before it dies
  }
  torch::manual_seed(1234);  // a new process starts with another state
  TinyRun resumed;
  CheckpointManager m(dir.string());
  auto ck = m.resolve_resume("auto");
  ASSERT_TRUE(ck.has_value());
  TrainerState st = read_trainer_state(ck->path);
  load_into(ck->path + "/" + kWeightsFile, resumed.weights());
  resumed.opt.load(ck->path + "/" + kOptimizerFile);
  resumed.sched.set_step(st.lr_scheduler_step);
  resumed.scaler.set_state(st.loss_scaler);
  restore_rng(st.rng);
  for (int64_t i = st.global_step; i < 8; ++i) resumed.step(i);

  EXPECT_TRUE(torch::equal(resumed.w, straight.w));
  EXPECT_TRUE(torch::equal(resumed.b, straight.b));
  EXPECT_EQ(resumed.scaler.state().scale, straight.scaler.state().scale);
  fs::remove_all(dir);
}

namespace {

// find_adapter_run: the run around output_dir/adapter and output_dir/checkpoint-N, and nothing
// for an adapter moved out of its run.
TEST(FindAdapterRun, FinalAdapterCheckpointAndLoneAdapter) {
  const fs::path run = temp_dir("adapter_run");
  fs::create_directories(run / "adapter");
  fs::create_directories(run / "checkpoint-4");
  fs::create_directories(run / "elsewhere/lone");
  dsft::util::write_file_atomic((run / "config.yaml").string(), std::string_view("r: 4\n"));
  dsft::util::write_file_atomic((run / "metrics.jsonl").string(), std::string_view("{}\n"));
  dsft::util::write_file_atomic((run / "checkpoint-4/config.yaml").string(), std::string_view("r: 4\n"));

  AdapterRun a = find_adapter_run((run / "adapter").string() + "/");
  EXPECT_EQ(a.run_dir, run.string());
  EXPECT_EQ(a.config_path, (run / "config.yaml").string());
  EXPECT_EQ(a.metrics_path, (run / "metrics.jsonl").string());

  AdapterRun c = find_adapter_run((run / "checkpoint-4").string());
  EXPECT_EQ(c.run_dir, run.string());
  EXPECT_EQ(c.config_path, (run / "checkpoint-4/config.yaml").string());  // the checkpoint's own
  EXPECT_EQ(c.metrics_path, (run / "metrics.jsonl").string());

  AdapterRun lone = find_adapter_run((run / "elsewhere/lone").string());
  EXPECT_EQ(lone.run_dir, "");
  EXPECT_EQ(lone.config_path, "");
  EXPECT_EQ(lone.metrics_path, "");
  EXPECT_EQ(find_adapter_run("").run_dir, "");
  fs::remove_all(run);
}

}  // namespace
