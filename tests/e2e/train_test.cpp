// e2e: `dsft train` through the real binary. The tiny.yaml smoke run creates its model, trains a
// LoRA and lowers validation perplexity; a run killed with SIGKILL after a checkpoint and resumed
// with resume_from_checkpoint=auto logs exactly the losses of an uninterrupted run; SIGINT writes a
// checkpoint and exits 130; --dry-run prints the memory plan and a run that cannot fit is refused
// before anything is loaded.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "e2e/run.h"

namespace fs = std::filesystem;

namespace {

const std::string kSource = DSFT_SOURCE_DIR;

std::string q(const std::string& s) {
  return "'" + s + "'";
}

class TrainE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = (fs::temp_directory_path() / ("dsft_train_e2e_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // tiny.yaml with the model and run directories moved under the test's temp root.
  static std::string tiny_args(const std::string& run, const std::string& extra = "") {
    return "train --config " + q(kSource + "/configs/tiny.yaml") +
           " model_name_or_path=" + q(root_ + "/model") + " output_dir=" + q(root_ + "/" + run) + " " + extra;
  }

  static std::string root_;
};
std::string TrainE2E::root_;

struct Metrics {
  std::map<int64_t, double> loss;       // step -> training loss
  std::map<int64_t, double> eval_loss;  // step -> validation loss
};

Metrics read_metrics(const std::string& path) {
  Metrics m;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    const int64_t step = j.value("step", int64_t{-1});
    if (j.contains("loss") && j["loss"].is_number()) m.loss[step] = j["loss"].get<double>();
    if (j.contains("eval_loss") && j["eval_loss"].is_number())
      m.eval_loss[step] = j["eval_loss"].get<double>();
  }
  return m;
}

// Starts dsft with `args` (split on spaces; no quoting needed for the paths used here), output to
// `log`. Returns the child's pid.
pid_t spawn_dsft(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    std::string bin = DSFT_BINARY;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

std::vector<std::string> tiny_argv(const std::string& root, const std::string& run,
                                   const std::vector<std::string>& extra) {
  std::vector<std::string> a = {"train", "--config", kSource + "/configs/tiny.yaml",
                                "model_name_or_path=" + root + "/model", "output_dir=" + root + "/" + run};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

bool wait_for(const std::function<bool()>& cond, double seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

int mode_of(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 0777;
}

}  // namespace

TEST_F(TrainE2E, TinySmokeRunLowersValidationPerplexity) {
  auto r = e2e::run_dsft(tiny_args("smoke"));
  ASSERT_EQ(r.code, 0) << r.out;
  const fs::path run = root_ + "/smoke";
  // The model was created with a tokenizer; the run wrote its products with private permissions.
  EXPECT_TRUE(fs::exists(root_ + "/model/config.json"));
  EXPECT_TRUE(fs::exists(root_ + "/model/tokenizer.model"));
  for (const char* f :
       {"config.yaml", "metrics.jsonl", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}) {
    ASSERT_TRUE(fs::exists(run / f)) << f << "\n" << r.out;
    EXPECT_EQ(mode_of(run / f), 0600) << f;
  }
  EXPECT_EQ(mode_of(run / "adapter"), 0700);
  auto adapter = nlohmann::json::parse(std::ifstream(run / "adapter/adapter_config.json"));
  EXPECT_EQ(adapter["peft_type"], "LORA");
  EXPECT_EQ(adapter["base_model_name_or_path"], root_ + "/model");

  Metrics m = read_metrics((run / "metrics.jsonl").string());
  ASSERT_TRUE(m.eval_loss.count(0)) << r.out;
  ASSERT_GE(m.eval_loss.size(), 2u);
  const double first = m.eval_loss.begin()->second, last = m.eval_loss.rbegin()->second;
  EXPECT_LT(last, first - 0.1) << "validation loss did not drop: " << first << " -> " << last;
  EXPECT_NE(r.out.find("validation perplexity"), std::string::npos) << r.out;
  // save_total_limit 2 keeps at most the two newest plus the best.
  int checkpoints = 0;
  for (const auto& e : fs::directory_iterator(run))
    checkpoints += e.path().filename().string().rfind("checkpoint-", 0) == 0;
  EXPECT_GE(checkpoints, 1);
  EXPECT_LE(checkpoints, 3);
}

TEST_F(TrainE2E, ResumeAfterSigkillReproducesTheUninterruptedLosses) {
  // Dropout on, so that the restored RNG state matters; checkpoints every 3 steps.
  const std::vector<std::string> common = {"max_steps=24",     "save_steps=3",       "eval_steps=6",
                                           "lora_dropout=0.1", "save_total_limit=0", "logging_steps=1"};
  auto full = e2e::run_dsft(tiny_args("full",
                                      "max_steps=24 save_steps=3 eval_steps=6 lora_dropout=0.1 "
                                      "save_total_limit=0 logging_steps=1"));
  ASSERT_EQ(full.code, 0) << full.out;
  const Metrics want = read_metrics(root_ + "/full/metrics.jsonl");
  ASSERT_EQ(want.loss.size(), 24u);

  const std::string run = root_ + "/killed";
  pid_t pid = spawn_dsft(tiny_argv(root_, "killed", common), root_ + "/killed.log");
  ASSERT_GT(pid, 0);
  // Kill as soon as a checkpoint exists and at least one more step has been logged after it.
  const bool ready = wait_for(
      [&] {
        if (!fs::exists(run + "/checkpoint-3/trainer_state.json")) return false;
        return read_metrics(run + "/metrics.jsonl").loss.size() >= 4;
      },
      60.0);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(ready) << "no checkpoint appeared";
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  const size_t logged_before = read_metrics(run + "/metrics.jsonl").loss.size();
  ASSERT_LT(logged_before, 24u);

  auto resumed = e2e::run_dsft(tiny_args("killed",
                                         "max_steps=24 save_steps=3 eval_steps=6 lora_dropout=0.1 "
                                         "save_total_limit=0 logging_steps=1 resume_from_checkpoint=auto"));
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("resuming from"), std::string::npos) << resumed.out;
  const Metrics got = read_metrics(run + "/metrics.jsonl");
  ASSERT_EQ(got.loss.size(), 24u);
  for (const auto& [step, loss] : want.loss) {
    ASSERT_TRUE(got.loss.count(step)) << step;
    EXPECT_EQ(got.loss.at(step), loss) << "step " << step << " (killed after " << logged_before << " steps)";
  }
  EXPECT_EQ(got.eval_loss, want.eval_loss);
}

TEST_F(TrainE2E, SigintWritesACheckpointAndExits130) {
  const std::string run = root_ + "/interrupted";
  pid_t pid =
      spawn_dsft(tiny_argv(root_, "interrupted", {"max_steps=400", "save_steps=1000", "eval_steps=1000"}),
                 root_ + "/interrupted.log");
  ASSERT_TRUE(wait_for([&] { return read_metrics(run + "/metrics.jsonl").loss.size() >= 2; }, 60.0));
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::ifstream log(root_ + "/interrupted.log");
  std::stringstream text;
  text << log.rdbuf();
  ASSERT_TRUE(WIFEXITED(status)) << text.str();
  EXPECT_EQ(WEXITSTATUS(status), 130) << text.str();
  int checkpoints = 0;
  for (const auto& e : fs::directory_iterator(run))
    checkpoints += e.path().filename().string().rfind("checkpoint-", 0) == 0;
  EXPECT_EQ(checkpoints, 1) << text.str();
  EXPECT_NE(text.str().find("resume_from_checkpoint=auto"), std::string::npos) << text.str();
}

TEST_F(TrainE2E, DryRunPrintsThePlanAndHugeModelsAreRefusedBeforeLoading) {
  // DeepSeek-V3's published shape; the directory holds config.json only, so any attempt to load
  // weights would fail with another message.
  const fs::path huge = fs::path(root_) / "deepseek-v3";
  fs::create_directories(huge);
  std::ofstream(huge / "config.json") << R"({
    "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256, "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "norm_topk_prob": true, "scoring_func": "sigmoid",
    "max_position_embeddings": 163840, "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
                     "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 1})";
  const std::string args = "train --config " + q(kSource + "/configs/tiny.yaml") +
                           " model_name_or_path=" + q(huge.string()) +
                           " output_dir=" + q(root_ + "/huge-run");
  auto dry = e2e::run_dsft(args + " --dry-run");
  EXPECT_EQ(dry.code, 1) << dry.out;
  EXPECT_NE(dry.out.find("memory plan"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("does NOT fit"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("needs about"), std::string::npos) << dry.out;

  auto real = e2e::run_dsft(args);
  EXPECT_EQ(real.code, 1) << real.out;
  EXPECT_NE(real.out.find("needs about"), std::string::npos) << real.out;
  EXPECT_EQ(real.out.find("safetensors"), std::string::npos) << real.out;
  EXPECT_FALSE(fs::exists(root_ + "/huge-run"));

  // The tiny model's plan fits and --dry-run leaves no trace.
  auto small = e2e::run_dsft(tiny_args("dry", "--dry-run"));
  EXPECT_EQ(small.code, 0) << small.out;
  EXPECT_NE(small.out.find("fits"), std::string::npos) << small.out;
  EXPECT_NE(small.out.find("with gradient checkpointing"), std::string::npos) << small.out;
  EXPECT_FALSE(fs::exists(root_ + "/dry"));
}
