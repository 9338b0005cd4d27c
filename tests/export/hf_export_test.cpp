// run_export with --format hf: the merged checkpoint computes base + adapter (llama, and
// deepseek_v2 with LoRA on MLA projections and MoE experts), loads back as a plain checkpoint,
// keeps the checkpoint's dtype, shards with a correct index, carries config, generation config,
// tokenizer and the run's chat template; outputs are private and atomic, and bad inputs are
// refused before anything is written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "dsft/export/export.h"
#include "dsft/io/safetensors.h"
#include "dsft/text/chat_template.h"
#include "dsft/train/config.h"
#include "dsft/util/error.h"
#include "export/export_fixture.h"

namespace dsft::exporter::test {
namespace {

ExportOptions hf_options(const std::string& model, const std::string& adapter, const std::string& out) {
  ExportOptions o;
  o.model_dir = model;
  o.adapter_dir = adapter;
  o.format = ExportFormat::hf;
  o.output = out;
  return o;
}

TEST(HfExport, LlamaMergedLogitsEqualBasePlusAdapterAndReload) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  const auto adapted = make_adapter(model, tmp.path("adapter"), {"all-linear"});
  ASSERT_EQ(adapted.size(), 14u);  // 2 layers x 7 projections
  const ExportReport r = run_export(hf_options(model, tmp.path("adapter"), tmp.path("out")));
  EXPECT_EQ(r.merged_layers, 14);
  EXPECT_EQ(r.shards, 1u);
  EXPECT_EQ(r.dtype, "float32");

  const torch::Tensor expected = logits_of(model, tmp.path("adapter"));
  const torch::Tensor merged = logits_of(tmp.path("out"));  // a plain checkpoint: no adapter
  const torch::Tensor base = logits_of(model);
  std::printf("llama merged vs base + adapter: max rel diff %.3g\n", max_rel_diff(merged, expected));
  EXPECT_LE(max_rel_diff(merged, expected), 1e-5);
  // The adapter matters: the merge did not just copy the base.
  EXPECT_GT(max_rel_diff(base, expected), 1e-3);

  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json"})
    EXPECT_TRUE(fs::is_regular_file(tmp.path("out") + "/" + f)) << f;
  EXPECT_FALSE(fs::exists(tmp.path("out") + "/model.safetensors.index.json"));
  EXPECT_EQ(read_json_file(tmp.path("out") + "/config.json")["torch_dtype"], "float32");
}

TEST(HfExport, DeepseekV2AdapterOnMlaAndExpertsMergesExactly) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "deepseek_v2");
  const auto adapted = make_adapter(
      model, tmp.path("adapter"),
      {"q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  auto has = [&](const std::string& part) {
    return std::any_of(adapted.begin(), adapted.end(),
                       [&](const std::string& p) { return p.find(part) != std::string::npos; });
  };
  ASSERT_TRUE(has("self_attn.kv_b_proj"));
  ASSERT_TRUE(has("mlp.experts.3.up_proj"));
  ASSERT_TRUE(has("mlp.shared_experts.down_proj"));
  ExportOptions o = hf_options(model, tmp.path("adapter"), tmp.path("out"));
  o.max_shard_bytes = 100'000;  // several shards
  const ExportReport r = run_export(o);
  EXPECT_EQ(r.merged_layers, static_cast<int64_t>(adapted.size()));
  EXPECT_GT(r.shards, 2u);
  const torch::Tensor expected = logits_of(model, tmp.path("adapter"));
  const torch::Tensor merged = logits_of(tmp.path("out"));
  std::printf("deepseek_v2 merged vs base + adapter: max rel diff %.3g\n", max_rel_diff(merged, expected));
  EXPECT_LE(max_rel_diff(merged, expected), 1e-5);
  EXPECT_GT(max_rel_diff(logits_of(model), expected), 1e-3);
}

TEST(HfExport, ShardsAndIndexAreConsistent) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  make_adapter(model, tmp.path("adapter"), {"q_proj", "v_proj"});
  ExportOptions o = hf_options(model, tmp.path("adapter"), tmp.path("out"));
  o.max_shard_bytes = 200'000;
  const ExportReport r = run_export(o);
  ASSERT_GT(r.shards, 2u);

  const json index = read_json_file(tmp.path("out") + "/model.safetensors.index.json");
  const io::Checkpoint source = io::Checkpoint::open(model);
  std::set<std::string> files;
  size_t total = 0;
  for (const auto& [name, file] : index["weight_map"].items()) files.insert(file.get<std::string>());
  EXPECT_EQ(files.size(), r.shards);
  EXPECT_EQ(index["weight_map"].size(), source.names().size());
  for (const std::string& file : files) {
    EXPECT_TRUE(file.find("-of-0000" + std::to_string(r.shards)) != std::string::npos) << file;
    auto shard = io::SafetensorsFile::open(tmp.path("out") + "/" + file);
    size_t bytes = 0;
    for (const auto& [name, view] : shard->tensors()) {
      EXPECT_EQ(index["weight_map"][name], file) << name;
      bytes += view.nbytes;
    }
    // A shard exceeds the limit only when one tensor alone does.
    if (shard->tensors().size() > 1) {
      EXPECT_LE(bytes, o.max_shard_bytes) << file;
    }
    total += bytes;
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), total);
  for (const std::string& name : source.names()) EXPECT_TRUE(index["weight_map"].contains(name)) << name;
  // Untouched tensors are copied bit for bit.
  const io::Checkpoint out = io::Checkpoint::open(tmp.path("out"));
  const auto& a = out.at("model.layers.0.mlp.down_proj.weight");
  const auto& b = source.at("model.layers.0.mlp.down_proj.weight");
  ASSERT_EQ(a.nbytes, b.nbytes);
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0);
  // The merged one is not.
  EXPECT_NE(std::memcmp(out.at("model.layers.0.self_attn.q_proj.weight").data,
                        source.at("model.layers.0.self_attn.q_proj.weight").data,
                        source.at("model.layers.0.self_attn.q_proj.weight").nbytes),
            0);
}

TEST(HfExport, Bf16CheckpointIsMergedInFp32AndCastBack) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama", "bfloat16");
  make_adapter(model, tmp.path("adapter"), {"q_proj"}, 4, 8.0);
  run_export(hf_options(model, tmp.path("adapter"), tmp.path("out")));
  EXPECT_EQ(read_json_file(tmp.path("out") + "/config.json")["torch_dtype"], "bfloat16");
  const io::Checkpoint out = io::Checkpoint::open(tmp.path("out"));
  for (const auto& name : out.names()) EXPECT_EQ(out.at(name).dtype, io::DType::BF16) << name;

  const io::Checkpoint base = io::Checkpoint::open(model);
  auto adapter = io::SafetensorsFile::open(tmp.path("adapter") + "/adapter_model.safetensors");
  const std::string key = "model.layers.1.self_attn.q_proj";
  const torch::Tensor w = model::tensor_from_view(base.at(key + ".weight")).to(torch::kFloat32);
  const torch::Tensor a = model::tensor_from_view(adapter->at("base_model.model." + key + ".lora_A.weight"));
  const torch::Tensor b = model::tensor_from_view(adapter->at("base_model.model." + key + ".lora_B.weight"));
  const torch::Tensor expected =
      (w + torch::mm(b.to(torch::kFloat32), a.to(torch::kFloat32)) * 2.0).to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(model::tensor_from_view(out.at(key + ".weight")), expected));

  // --dtype float32 casts everything.
  ExportOptions o = hf_options(model, tmp.path("adapter"), tmp.path("out32"));
  o.dtype = "float32";
  const ExportReport r = run_export(o);
  EXPECT_EQ(r.dtype, "float32");
  EXPECT_EQ(io::Checkpoint::open(tmp.path("out32")).at(key + ".weight").dtype, io::DType::F32);
}

TEST(HfExport, PlainConversionWithoutAdapterAndRunChatTemplate) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "qwen2");
  run_export(hf_options(model, "", tmp.path("plain")));
  EXPECT_LE(max_rel_diff(logits_of(tmp.path("plain")), logits_of(model)), 0.0);

  // A training run (config.yaml naming a template, metrics.jsonl) around the adapter.
  fs::create_directories(tmp.path("run"));
  make_adapter(model, tmp.path("run/adapter"), {"v_proj"});
  train::TrainConfig tc = train::parse_train_config("model_name_or_path: " + model +
                                                    "\ndataset: [data/train.jsonl]\nchat_template: llama3\n");
  train::write_config(tc, tmp.path("run/config.yaml"));
  write_text(tmp.path("run/metrics.jsonl"), "{\"step\":1,\"loss\":2.5}\n");
  const ExportReport r =
      run_export(hf_options(model, tmp.path("run"), tmp.path("out")));  // the run dir resolves
  EXPECT_EQ(r.merged_layers, 2);
  const json tc_out = read_json_file(tmp.path("out") + "/tokenizer_config.json");
  EXPECT_EQ(tc_out["chat_template"], text::ChatTemplate::builtin_source("llama3"));
  EXPECT_EQ(tc_out["eos_token"], read_json_file(model + "/tokenizer_config.json")["eos_token"]);
}

TEST(HfExport, OutputIsPrivateAndNeverOverwrittenWithoutForce) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  make_adapter(model, tmp.path("adapter"), {"q_proj"});
  ExportOptions o = hf_options(model, tmp.path("adapter"), tmp.path("out"));
  run_export(o);
  EXPECT_EQ(mode_of(tmp.path("out")), 0700u);
  for (const auto& e : fs::directory_iterator(tmp.path("out")))
    EXPECT_EQ(mode_of(e.path().string()), 0600u) << e.path();
  EXPECT_TRUE(entries_starting(tmp.dir(), ".out").empty());

  write_text(tmp.path("out") + "/marker", "x");
  try {
    run_export(o);
    FAIL() << "an existing OUT was replaced without force";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--force"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(tmp.path("out") + "/marker"));
  o.force = true;
  run_export(o);
  EXPECT_FALSE(fs::exists(tmp.path("out") + "/marker"));
  EXPECT_TRUE(fs::exists(tmp.path("out") + "/model.safetensors"));
  EXPECT_TRUE(entries_starting(tmp.dir(), ".out").empty());
}

TEST(HfExport, AFailureHalfwayLeavesNothingBehind) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  make_adapter(model, tmp.path("adapter"), {"q_proj"});
  // Passes every check, fails after the weights are written (tokenizer_config.json is read last).
  write_text(model + "/tokenizer_config.json", "{ not json");
  EXPECT_THROW(run_export(hf_options(model, tmp.path("adapter"), tmp.path("out"))), Error);
  EXPECT_FALSE(fs::exists(tmp.path("out")));
  EXPECT_TRUE(entries_starting(tmp.dir(), ".out").empty());
}

// The error message of run_export, or "" when it did not throw; OUT must not exist afterwards.
std::string export_error(const ExportOptions& o) {
  try {
    run_export(o);
  } catch (const Error& e) {
    EXPECT_FALSE(fs::exists(o.output)) << "written despite: " << e.what();
    EXPECT_TRUE(entries_starting(fs::path(o.output).parent_path().string(),
                                 "." + fs::path(o.output).filename().string())
                    .empty());
    return e.what();
  }
  return "";
}

TEST(HfExport, BadInputsAreRefusedBeforeAnythingIsWritten) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  make_adapter(model, tmp.path("adapter"), {"q_proj", "down_proj"});

  // An adapter for another base: same family, other widths.
  const std::string other = make_model(tmp, "other", "llama", "float32", {"intermediate_size=96"});
  std::string e = export_error(hf_options(other, tmp.path("adapter"), tmp.path("out")));
  EXPECT_NE(e.find("down_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("another base model"), std::string::npos) << e;
  // ... or another family (no such modules).
  make_adapter(make_model(tmp, "ds", "deepseek_v2"), tmp.path("ds_adapter"), {"kv_b_proj"});
  e = export_error(hf_options(model, tmp.path("ds_adapter"), tmp.path("out")));
  EXPECT_NE(e.find("kv_b_proj"), std::string::npos) << e;

  // Weights that do not fit config.json.
  const std::string broken = make_model(tmp, "broken", "llama");
  json cfg = read_json_file(broken + "/config.json");
  cfg["intermediate_size"] = 96;
  write_text(broken + "/config.json", cfg.dump());
  e = export_error(hf_options(broken, "", tmp.path("out")));
  EXPECT_NE(e.find("shape"), std::string::npos) << e;

  // No tokenizer.
  const std::string bare = make_model(tmp, "bare", "llama");
  fs::remove(bare + "/tokenizer.json");
  e = export_error(hf_options(bare, "", tmp.path("out")));
  EXPECT_NE(e.find("no tokenizer"), std::string::npos) << e;

  // No adapter there; no model there.
  e = export_error(hf_options(model, tmp.path("nowhere"), tmp.path("out")));
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  e = export_error(hf_options(tmp.path("nowhere"), "", tmp.path("out")));
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;

  // --force never replaces an input.
  ExportOptions onto_input = hf_options(model, tmp.path("adapter"), model);
  onto_input.force = true;
  EXPECT_THROW(run_export(onto_input), Error);
  EXPECT_TRUE(fs::exists(model + "/config.json"));
  onto_input.output = tmp.dir();
  EXPECT_THROW(run_export(onto_input), Error);

  // Missing folders above OUT are made (0700); a file where a folder should be is an error.
  run_export(hf_options(model, "", tmp.path("new/nested/out")));
  EXPECT_TRUE(fs::exists(tmp.path("new/nested/out/config.json")));
  EXPECT_EQ(mode_of(tmp.path("new/nested")), 0700u);
  write_text(tmp.path("a-file"), "x");
  e = export_error(hf_options(model, "", tmp.path("a-file/out")));
  EXPECT_NE(e.find("not a folder"), std::string::npos) << e;

  // Formats and sizes.
  EXPECT_THROW(parse_export_format("onnx"), UsageError);
  EXPECT_EQ(parse_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_size("2GiB"), 2147483648u);
  EXPECT_EQ(parse_size("500 mb"), 500'000'000u);
  EXPECT_EQ(parse_size("1000"), 1000u);
  EXPECT_THROW(parse_size("0"), Error);
  EXPECT_THROW(parse_size("5XB"), Error);
  EXPECT_THROW(parse_size("GB"), Error);
}

TEST(HfExport, AnotherBaseNameWithFittingShapesIsOnlyAWarning) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  make_adapter(model, tmp.path("adapter"), {"q_proj"}, 4, 8.0, 7, "deepseek-ai/some-other-model");
  const ExportReport r = run_export(hf_options(model, tmp.path("adapter"), tmp.path("out")));
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("deepseek-ai/some-other-model"), std::string::npos) << r.warnings[0];
  EXPECT_EQ(r.merged_layers, 2);
}

}  // namespace
}  // namespace dsft::exporter::test
