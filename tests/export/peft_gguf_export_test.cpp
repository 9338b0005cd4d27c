// run_export with --format peft (the adapter's files unchanged, a model card from the run around
// it, "unknown" without one) and --format gguf (the merged model, the LoRA as a GGUF adapter where
// llama.cpp can apply it, the Modelfile, --lora-only).
#include <gtest/gtest.h>

#include "dsft/export/export.h"
#include "dsft/io/gguf.h"
#include "dsft/train/config.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "export/export_fixture.h"

namespace dsft::exporter::test {
namespace {

ExportOptions options(ExportFormat format, const std::string& model, const std::string& adapter,
                      const std::string& out) {
  ExportOptions o;
  o.model_dir = model;
  o.adapter_dir = adapter;
  o.format = format;
  o.output = out;
  return o;
}

TEST(PeftExport, AdapterFilesAndModelCardFromTheRun) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  fs::create_directories(tmp.path("run"));
  make_adapter(model, tmp.path("run/adapter"), {"q_proj", "v_proj"});
  train::TrainConfig tc = train::parse_train_config(
      "model_name_or_path: " + model +
      "\ndataset: [data/faq.jsonl]\nval_size: 0.1\nlearning_rate: 3.0e-4\nmax_steps: 20\n");
  train::write_config(tc, tmp.path("run/config.yaml"));
  write_text(tmp.path("run/metrics.jsonl"),
             "{\"step\":10,\"epoch\":0.5,\"loss\":3.25}\n"
             "{\"step\":10,\"epoch\":0.5,\"eval_loss\":3.5,\"eval_ppl\":33.115}\n"
             "{\"step\":20,\"epoch\":1.0,\"loss\":2.125}\n"
             "{\"step\":20,\"epoch\":1.0,\"eval_loss\":2.75,\"eval_ppl\":15.643}\n");
  const ExportReport r =
      run_export(options(ExportFormat::peft, model, tmp.path("run/adapter"), tmp.path("out")));
  EXPECT_EQ(r.files,
            (std::vector<std::string>{"README.md", "adapter_config.json", "adapter_model.safetensors"}));
  EXPECT_EQ(util::read_file(tmp.path("out/adapter_model.safetensors")),
            util::read_file(tmp.path("run/adapter/adapter_model.safetensors")));
  // It is still an adapter of this model.
  EXPECT_LE(max_rel_diff(logits_of(model, tmp.path("out")), logits_of(model, tmp.path("run/adapter"))), 0.0);
  EXPECT_EQ(mode_of(tmp.path("out/README.md")), 0600u);

  const std::string card = util::read_file(tmp.path("out/README.md"));
  for (const std::string& s :
       {std::string("base_model: \"") + model + "\"", std::string("`data/faq.jsonl`"),
        std::string("10% of the training records held out"), std::string("| learning_rate | 0.0003 |"),
        std::string("Final training loss: 2.1250"), std::string("Final eval loss: 2.7500 (step 20)"),
        std::string("Final eval perplexity: 15.643"), std::string("Rank r: 4")})
    EXPECT_NE(card.find(s), std::string::npos) << s << "\n---\n" << card;
  EXPECT_EQ(card.find("unknown"), std::string::npos) << card;
}

TEST(PeftExport, WithoutARunTheCardSaysUnknown) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  make_adapter(model, tmp.path("adapter"), {"q_proj"});
  run_export(options(ExportFormat::peft, model, tmp.path("adapter"), tmp.path("out")));
  const std::string card = util::read_file(tmp.path("out/README.md"));
  EXPECT_NE(card.find("Datasets: unknown"), std::string::npos) << card;
  EXPECT_NE(card.find("Final training loss: unknown"), std::string::npos) << card;
  EXPECT_NE(card.find("Final eval perplexity: unknown"), std::string::npos) << card;
}

TEST(PeftExport, NeedsAnAdapterThatFitsTheModel) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  EXPECT_THROW(run_export(options(ExportFormat::peft, model, "", tmp.path("out"))), UsageError);
  const std::string other = make_model(tmp, "other", "llama", "float32", {"hidden_size=32"});
  make_adapter(other, tmp.path("adapter"), {"q_proj"});
  EXPECT_THROW(run_export(options(ExportFormat::peft, model, tmp.path("adapter"), tmp.path("out"))), Error);
  EXPECT_FALSE(fs::exists(tmp.path("out")));
}

TEST(GgufExport, MergedModelLoraAdapterAndModelfile) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "llama");
  make_adapter(model, tmp.path("adapter"), {"q_proj", "k_proj", "v_proj", "o_proj"});
  ExportOptions o = options(ExportFormat::gguf, model, tmp.path("adapter"), tmp.path("tiny"));
  o.gguf_type = GgufOutType::f32;
  const ExportReport r = run_export(o);
  EXPECT_EQ(r.files, (std::vector<std::string>{"Modelfile", "tiny-lora.gguf", "tiny.gguf"}));
  EXPECT_EQ(r.merged_layers, 8);
  EXPECT_TRUE(r.warnings.empty());
  for (const auto& f : r.files) EXPECT_EQ(mode_of(tmp.path("tiny/" + f)), 0600u) << f;

  // The merged GGUF holds the merged weights: o_proj (no permutation) equals W + s B A.
  auto g = io::GgufFile::open(tmp.path("tiny/tiny.gguf"));
  const auto vals = g->to_float(g->tensor("blk.0.attn_output.weight"));
  const io::Checkpoint merged = [&] {
    ExportOptions h = options(ExportFormat::hf, model, tmp.path("adapter"), tmp.path("hf"));
    run_export(h);
    return io::Checkpoint::open(tmp.path("hf"));
  }();
  const torch::Tensor w = model::tensor_from_view(merged.at("model.layers.0.self_attn.o_proj.weight"));
  ASSERT_EQ(vals.size(), static_cast<size_t>(w.numel()));
  EXPECT_TRUE(torch::equal(torch::from_blob(const_cast<float*>(vals.data()), w.sizes()), w));

  auto lora = io::GgufFile::open(tmp.path("tiny/tiny-lora.gguf"));
  EXPECT_EQ(lora->at("general.type").as_string(), "adapter");
  EXPECT_EQ(lora->tensors().size(), 16u);
  const std::string modelfile = util::read_file(tmp.path("tiny/Modelfile"));
  EXPECT_NE(modelfile.find("FROM ./tiny.gguf"), std::string::npos) << modelfile;
  EXPECT_FALSE(fs::exists(tmp.path("tiny/.merged")));

  // --lora-only: just the adapter.
  o.lora_only = true;
  o.output = tmp.path("lora");
  o.name = "ft";
  EXPECT_EQ(run_export(o).files, (std::vector<std::string>{"ft-lora.gguf"}));
}

TEST(GgufExport, DeepseekAdapterOnKvBIsMergedWithAWarningInsteadOfALoraFile) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "deepseek_v2", "float32", {"q_lora_rank=16"});
  make_adapter(model, tmp.path("adapter"), {"kv_b_proj", "o_proj"});
  const ExportReport r = run_export(options(ExportFormat::gguf, model, tmp.path("adapter"), tmp.path("ds")));
  EXPECT_EQ(r.files, (std::vector<std::string>{"Modelfile", "ds.gguf"}));
  bool warned = false;
  for (const auto& w : r.warnings) warned |= w.find("ds-lora.gguf") != std::string::npos;
  EXPECT_TRUE(warned);
  // --lora-only cannot drop the kv_b_proj part: refused, nothing written.
  ExportOptions o = options(ExportFormat::gguf, model, tmp.path("adapter"), tmp.path("ds-lora"));
  o.lora_only = true;
  EXPECT_THROW(run_export(o), Error);
  EXPECT_FALSE(fs::exists(tmp.path("ds-lora")));
}

TEST(GgufExport, PlainConversionAndUsageErrors) {
  TempDir tmp;
  const std::string model = make_model(tmp, "base", "qwen2");
  const ExportReport r = run_export(options(ExportFormat::gguf, model, "", tmp.path("q")));
  EXPECT_EQ(r.files, (std::vector<std::string>{"Modelfile", "q.gguf"}));
  ExportOptions o = options(ExportFormat::hf, model, "", tmp.path("x"));
  o.lora_only = true;
  EXPECT_THROW(run_export(o), UsageError);
  o = options(ExportFormat::gguf, model, "", tmp.path("x"));
  o.lora_only = true;
  EXPECT_THROW(run_export(o), UsageError);
  o = options(ExportFormat::gguf, model, "", tmp.path("x"));
  o.dtype = "bfloat16";
  EXPECT_THROW(run_export(o), UsageError);
  // A SentencePiece-only model has no GGUF tokenizer.
  fs::remove(model + "/tokenizer.json");
  write_text(model + "/tokenizer.model", "x");
  EXPECT_THROW(run_export(options(ExportFormat::gguf, model, "", tmp.path("y"))), Error);
  EXPECT_FALSE(fs::exists(tmp.path("y")));
}

}  // namespace
}  // namespace dsft::exporter::test
