// TrainConfig: defaults, YAML, command-line overrides, precedence, errors, round trip, bundled configs.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "dsft/train/config.h"
#include "dsft/util/error.h"

using namespace dsft;
using namespace dsft::train;

namespace {

const std::string kMinimal =
    "model_name_or_path: runs/tiny-model\n"
    "dataset: data/sample/alpaca.jsonl\n";

// The message of the dsft::Error that `f` throws ("" when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dsft::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(TrainConfig, DefaultsFollowHfAndPeft) {
  TrainConfig c = parse_train_config(kMinimal);
  EXPECT_EQ(c.model_name_or_path, "runs/tiny-model");
  EXPECT_EQ(c.dataset, std::vector<std::string>{"data/sample/alpaca.jsonl"});
  EXPECT_DOUBLE_EQ(c.learning_rate, 5e-5);
  EXPECT_EQ(c.lr_scheduler_type, SchedulerType::linear);
  EXPECT_DOUBLE_EQ(c.adam_beta2, 0.999);
  EXPECT_DOUBLE_EQ(c.adam_epsilon, 1e-8);
  EXPECT_EQ(c.max_steps, -1);
  EXPECT_EQ(c.finetuning_type, FinetuningType::lora);
  EXPECT_EQ(c.quantization, Quantization::none);
  EXPECT_EQ(c.target_modules, std::vector<std::string>{"all-linear"});
  EXPECT_FALSE(c.greater_is_better);  // eval_loss: lower is better
  EXPECT_EQ(c.resolved_data_seed(), 42);
}

TEST(TrainConfig, ReadsEveryKindOfValue) {
  TrainConfig c = parse_train_config(kMinimal +
                                     "learning_rate: 2.0e-4\n"
                                     "lr_scheduler_type: cosine\n"
                                     "warmup_ratio: 0.03\n"
                                     "bf16: true\n"
                                     "lora_r: 16\n"
                                     "target_modules: [q_proj, v_proj]\n"
                                     "modules_to_save:\n  - lm_head\n"
                                     "bias: lora_only\n"
                                     "val_size: 0.1\n"
                                     "metric_for_best_model: eval_accuracy\n"
                                     "finetuning_type: qlora\n");
  EXPECT_DOUBLE_EQ(c.learning_rate, 2e-4);
  EXPECT_EQ(c.lr_scheduler_type, SchedulerType::cosine);
  EXPECT_TRUE(c.bf16);
  EXPECT_EQ(c.r, 16);
  EXPECT_EQ(c.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(c.modules_to_save, std::vector<std::string>{"lm_head"});
  EXPECT_EQ(c.bias, LoraBias::lora_only);
  EXPECT_TRUE(c.has_evaluation());
  EXPECT_TRUE(c.greater_is_better);               // resolved from the metric name
  EXPECT_EQ(c.quantization, Quantization::nf4);   // qlora's default base
}

TEST(TrainConfig, PrecedenceDefaultsThenYamlThenCommandLine) {
  const std::string yaml = kMinimal + "learning_rate: 1.0e-4\nsave_steps: 100\nr: 4\n";
  TrainConfig c = parse_train_config(yaml, {"learning_rate=3e-4", "lora_r=32", "target_modules=[q_proj,k_proj]",
                                            "output_dir=runs/smoke", "bf16=true"});
  EXPECT_DOUBLE_EQ(c.learning_rate, 3e-4);  // command line beats YAML
  EXPECT_EQ(c.save_steps, 100);             // YAML beats default
  EXPECT_EQ(c.logging_steps, 10);           // default stays
  EXPECT_EQ(c.r, 32);                       // alias on the command line overrides canonical in YAML
  EXPECT_EQ(c.target_modules, (std::vector<std::string>{"q_proj", "k_proj"}));
  EXPECT_EQ(c.output_dir, "runs/smoke");
  EXPECT_TRUE(c.bf16);
}

TEST(TrainConfig, UnknownKeysNameTheClosestValidKey) {
  std::string e = error_of([&] { parse_train_config(kMinimal + "learning_rat: 1e-4\n", {}, "my.yaml"); });
  EXPECT_TRUE(contains(e, "learning_rat")) << e;
  EXPECT_TRUE(contains(e, "learning_rate")) << e;
  EXPECT_TRUE(contains(e, "my.yaml")) << e;

  e = error_of([&] { parse_train_config(kMinimal, {"num_train_epoch=2"}); });
  EXPECT_TRUE(contains(e, "num_train_epochs")) << e;
  EXPECT_TRUE(contains(e, "command line")) << e;

  e = error_of([&] { parse_train_config(kMinimal, {"max_steps"}); });
  EXPECT_TRUE(contains(e, "key=value")) << e;
}

TEST(TrainConfig, WrongTypesNameKeyAndValue) {
  struct Case {
    std::string override_arg, key, value;
  };
  for (const auto& c : std::vector<Case>{{"learning_rate=fast", "learning_rate", "fast"},
                                         {"max_steps=1.5", "max_steps", "1.5"},
                                         {"bf16=maybe", "bf16", "maybe"},
                                         {"r=[1,2]", "r", "[1, 2]"},
                                         {"lr_scheduler_type=cosin", "lr_scheduler_type", "cosin"},
                                         {"output_dir=[a,b]", "output_dir", "[a, b]"}}) {
    std::string e = error_of([&] { parse_train_config(kMinimal, {c.override_arg}); });
    EXPECT_TRUE(contains(e, c.key)) << c.override_arg << " -> " << e;
    EXPECT_TRUE(contains(e, c.value)) << c.override_arg << " -> " << e;
  }
  // The scheduler hint suggests the near miss.
  EXPECT_TRUE(contains(error_of([&] { parse_train_config(kMinimal, {"lr_scheduler_type=cosin"}); }),
                       "did you mean 'cosine'"));
}

TEST(TrainConfig, BadValuesAreRejected) {
  struct Case {
    std::vector<std::string> overrides;
    std::string must_mention;
  };
  const std::vector<Case> cases = {
      {{"learning_rate=-1e-4"}, "learning_rate"},
      {{"learning_rate=0"}, "learning_rate"},
      {{"bf16=true", "fp16=true"}, "bf16 and fp16"},
      {{"r=0"}, "r = 0"},
      {{"lora_r=-2"}, "r = -2"},
      {{"warmup_ratio=1.5"}, "warmup_ratio"},
      {{"val_size=-0.1"}, "val_size"},
      {{"mix_ratio=0.2"}, "mix_dataset"},
      {{"lora_dropout=1"}, "lora_dropout"},
      {{"adam_beta2=1"}, "adam_beta2"},
      {{"gradient_accumulation_steps=0"}, "gradient_accumulation_steps"},
      {{"max_steps=0"}, "max_steps"},
      {{"logging_steps=0"}, "logging_steps"},
      {{"device=tpu"}, "device"},
      {{"log_level=loud"}, "log_level"},
      {{"quantization=nf4"}, "qlora"},
      {{"finetuning_type=qlora", "quantization=none"}, "quantized base"},
      {{"finetuning_type=qlora", "quant_block_size=48"}, "quant_block_size"},
      {{"early_stopping_patience=3"}, "evaluation data"},
      {{"load_best_model_at_end=true"}, "evaluation data"},
      {{"val_size=0.1", "validation_file=v.jsonl"}, "both set"},
      {{"target_modules=[all-linear,q_proj]"}, "all-linear"},
      {{"target_modules=[]"}, "target_modules"},
      {{"model_name_or_path="}, "model_name_or_path"},
      {{"dataset=[]"}, "training data"},
      {{"weight_decay=-0.01"}, "weight_decay"},
      {{"learning_rate=.inf"}, "learning_rate"},
  };
  for (const auto& c : cases) {
    std::string e = error_of([&] { parse_train_config(kMinimal, c.overrides); });
    EXPECT_TRUE(contains(e, c.must_mention)) << c.overrides.front() << " -> '" << e << "'";
  }
  // Full fine-tuning does not care about LoRA's rank.
  EXPECT_NO_THROW(parse_train_config(kMinimal, {"finetuning_type=full", "r=0"}));
}

TEST(TrainConfig, StructuralYamlErrors) {
  EXPECT_TRUE(contains(error_of([] { parse_train_config("- a\n- b\n", {}, "list.yaml"); }), "mapping"));
  EXPECT_TRUE(contains(error_of([] { parse_train_config("a: [1,\n", {}, "broken.yaml"); }), "broken.yaml"));
  EXPECT_TRUE(contains(error_of([] { parse_train_config(kMinimal + "r: 4\nlora_r: 8\n"); }), "twice"));
  EXPECT_TRUE(contains(error_of([] { parse_train_config(kMinimal, {"r=4", "lora_r=8"}); }), "twice"));
  EXPECT_TRUE(contains(error_of([] { load_train_config("/nonexistent/dsft.yaml"); }), "/nonexistent/dsft.yaml"));
}

TEST(TrainConfig, ResolvedYamlRoundTrips) {
  TrainConfig c = parse_train_config(kMinimal, {"learning_rate=0.0001", "warmup_ratio=0.1", "num_train_epochs=3",
                                                "target_modules=[q_proj, 'o_proj']", "validation_file=val.jsonl",
                                                "chat_template=deepseek3", "finetuning_type=qlora",
                                                "adam_epsilon=1e-6", "resume_from_checkpoint=auto"});
  const std::string y = to_yaml(c);
  TrainConfig back = parse_train_config(y, {}, "resolved.yaml");
  EXPECT_EQ(to_yaml(back), y);
  EXPECT_DOUBLE_EQ(back.learning_rate, 1e-4);
  EXPECT_DOUBLE_EQ(back.adam_epsilon, 1e-6);
  EXPECT_EQ(back.quantization, Quantization::nf4);
  EXPECT_EQ(back.resume_from_checkpoint, "auto");
  EXPECT_EQ(back.target_modules, (std::vector<std::string>{"q_proj", "o_proj"}));
  EXPECT_TRUE(contains(y, "learning_rate: 0.0001")) << y;
  EXPECT_EQ(config_hash(back), config_hash(c));
}

TEST(TrainConfig, WriteConfigReadsBack) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dsft_train_config_" + std::to_string(::getpid()) + ".yaml")).string();
  TrainConfig c = parse_train_config(kMinimal, {"r=32", "packing=true"});
  write_config(c, path);
  EXPECT_EQ(to_yaml(load_train_config(path)), to_yaml(c));
  std::filesystem::remove(path);
}

TEST(TrainConfig, HashTracksTrajectoryNotBookkeeping) {
  TrainConfig a = parse_train_config(kMinimal);
  EXPECT_EQ(config_hash(a), config_hash(parse_train_config(kMinimal, {"output_dir=elsewhere", "logging_steps=1",
                                                                      "resume_from_checkpoint=auto", "max_steps=9"})));
  EXPECT_NE(config_hash(a), config_hash(parse_train_config(kMinimal, {"learning_rate=1e-3"})));
  EXPECT_NE(config_hash(a), config_hash(parse_train_config(kMinimal, {"seed=1"})));
  EXPECT_EQ(config_hash(a).size(), 16u);
}

TEST(TrainConfig, WarmupStepsFollowHf) {
  TrainConfig c = parse_train_config(kMinimal, {"warmup_ratio=0.1"});
  EXPECT_EQ(c.num_warmup_steps(95), 10);  // ceil(9.5)
  EXPECT_EQ(c.num_warmup_steps(100), 10);
  c = parse_train_config(kMinimal, {"warmup_ratio=0.1", "warmup_steps=3"});
  EXPECT_EQ(c.num_warmup_steps(100), 3);  // explicit steps win
}

TEST(TrainConfig, TrainFilesCombineDatasetAndTrainFile) {
  TrainConfig c = parse_train_config("model_name_or_path: m\ntrain_file: t.jsonl\ndataset: [a.jsonl, b.jsonl]\n");
  EXPECT_EQ(c.train_files(), (std::vector<std::string>{"a.jsonl", "b.jsonl", "t.jsonl"}));
}

TEST(TrainConfig, BundledConfigsParse) {
  const std::string dir = std::string(DSFT_SOURCE_DIR) + "/configs/";
  for (const char* name : {"lora.yaml", "qlora.yaml", "full.yaml", "tiny.yaml"}) {
    SCOPED_TRACE(name);
    TrainConfig c;
    ASSERT_NO_THROW(c = load_train_config(dir + name));
    // Each opens with the command that runs it and an override example.
    std::string first_lines;
    {
      std::FILE* f = std::fopen((dir + name).c_str(), "r");
      ASSERT_NE(f, nullptr);
      char buf[512];
      for (int i = 0; i < 6 && std::fgets(buf, sizeof buf, f); ++i) first_lines += buf;
      std::fclose(f);
    }
    EXPECT_TRUE(contains(first_lines, std::string("dsft train --config configs/") + name)) << first_lines;
    EXPECT_TRUE(contains(first_lines, "=")) << first_lines;
  }
  TrainConfig tiny = load_train_config(dir + "tiny.yaml", {"max_steps=8", "save_steps=4", "output_dir=runs/smoke"});
  EXPECT_EQ(tiny.max_steps, 8);
  EXPECT_EQ(tiny.model_name_or_path, "runs/tiny-model");
  EXPECT_EQ(load_train_config(dir + "qlora.yaml").finetuning_type, FinetuningType::qlora);
  EXPECT_EQ(load_train_config(dir + "full.yaml").finetuning_type, FinetuningType::full);
}
