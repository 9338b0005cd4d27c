// GGUF export without llama.cpp: metadata keys, tensor names and shapes, the layout changes
// (llama q/k un-permuted, deepseek2 kv_b split, experts stacked) checked element by element
// against the checkpoint with independent index arithmetic, output types, tokenizer metadata
// from the real fixture tokenizers, and inputs refused before anything is written.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>

#include "dsft/export/gguf_export.h"
#include "dsft/io/gguf.h"
#include "dsft/io/safetensors.h"
#include "dsft/util/error.h"
#include "export/export_util.h"

namespace dsft::exporter {
namespace {

using io::GgmlType;
using io::GgufFile;
using test::export_f32;
using test::TempDir;

// A checkpoint tensor as float32, row-major.
std::vector<float> hf_floats(const io::Checkpoint& ck, const std::string& name) {
  const auto& v = ck.at(name);
  std::vector<float> out(static_cast<size_t>(v.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t b;
    switch (v.dtype) {
      case io::DType::BF16:
        std::memcpy(&b, v.data + 2 * i, 2);
        out[i] = io::bf16_to_float(b);
        break;
      case io::DType::F32: std::memcpy(&out[i], v.data + 4 * i, 4); break;
      default: throw std::runtime_error("unexpected dtype in fixture");
    }
  }
  return out;
}

TEST(GgufExport, LlamaMetadataAndPermutedQk) {
  TempDir tmp;
  const std::string dir = test::fixture_model_dir(tmp, "llama3-rope");
  const auto rep = export_f32(dir, tmp.path("m.gguf"));
  EXPECT_EQ(rep.architecture, "llama");
  auto f = GgufFile::open(tmp.path("m.gguf"));
  EXPECT_EQ(f->at("general.architecture").as_string(), "llama");
  EXPECT_EQ(f->at("general.file_type").as_u64(), 0u);
  EXPECT_EQ(f->at("llama.block_count").as_u64(), 2u);
  EXPECT_EQ(f->at("llama.embedding_length").as_u64(), 64u);
  EXPECT_EQ(f->at("llama.feed_forward_length").as_u64(), 128u);
  EXPECT_EQ(f->at("llama.attention.head_count").as_u64(), 4u);
  EXPECT_EQ(f->at("llama.attention.head_count_kv").as_u64(), 2u);
  EXPECT_EQ(f->at("llama.rope.dimension_count").as_u64(), 16u);
  EXPECT_EQ(f->at("llama.context_length").as_u64(), 131072u);
  EXPECT_FLOAT_EQ(f->at("llama.rope.freq_base").as_f64(), 500000.0f);
  EXPECT_FLOAT_EQ(f->at("llama.attention.layer_norm_rms_epsilon").as_f64(), 1e-5f);
  EXPECT_EQ(f->at("tokenizer.ggml.model").as_string(), "gpt2");
  EXPECT_EQ(f->at("tokenizer.ggml.tokens").items().size(), 320u);
  EXPECT_EQ(f->at("tokenizer.ggml.bos_token_id").as_u64(), 1u);
  EXPECT_EQ(f->at("tokenizer.ggml.eos_token_id").as_u64(), 2u);
  EXPECT_EQ(f->find("llama.rope.scaling.type"), nullptr);  // llama3 scaling travels as rope_freqs

  // rope_freqs: 1 for high frequencies, factor (8) for low ones, the llama3 blend between.
  const auto& rf = f->tensor("rope_freqs.weight");
  ASSERT_EQ(rf.ne, (std::vector<int64_t>{8}));
  const auto freqs = f->to_float(rf);
  for (int i = 0; i < 8; ++i) {
    const double inv = 1.0 / std::pow(500000.0, 2.0 * i / 16);
    const double wl = 2 * M_PI / inv;
    double want = wl < 8192 / 4.0 ? 1.0 : wl > 8192 / 1.0 ? 8.0 : 0.0;
    if (want == 0.0) {
      const double s = (8192 / wl - 1) / (4 - 1);
      want = 1.0 / ((1 - s) / 8 + s);
    }
    EXPECT_NEAR(freqs[i], want, 1e-5 * want) << i;
  }

  auto ck = io::Checkpoint::open(test::fixture_model(dir.substr(dir.rfind('/') + 1)));
  // attn_q: GGUF row h*16 + 2j = HF row h*16 + j, row h*16 + 2j + 1 = HF row h*16 + 8 + j.
  for (const auto& [g, hf, heads] : {std::tuple<std::string, std::string, int>{"blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight", 4},
                                     {"blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", 2}}) {
    const auto& t = f->tensor(g);
    ASSERT_EQ(t.ne, (std::vector<int64_t>{64, heads * 16}));
    EXPECT_EQ(t.type, GgmlType::F32);
    const auto got = f->to_float(t);
    const auto want = hf_floats(ck, hf);
    for (int h = 0; h < heads; ++h)
      for (int j = 0; j < 8; ++j)
        for (int c = 0; c < 64; ++c) {
          ASSERT_EQ(got[(h * 16 + 2 * j) * 64 + c], want[(h * 16 + j) * 64 + c]) << g;
          ASSERT_EQ(got[(h * 16 + 2 * j + 1) * 64 + c], want[(h * 16 + 8 + j) * 64 + c]) << g;
        }
  }
  // v and the MLP are copied as they are ([out, in] -> ne {in, out}).
  const auto& down = f->tensor("blk.0.ffn_down.weight");
  EXPECT_EQ(down.ne, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(f->to_float(down), hf_floats(ck, "model.layers.0.mlp.down_proj.weight"));
  EXPECT_EQ(f->to_float(f->tensor("blk.0.attn_v.weight")), hf_floats(ck, "model.layers.0.self_attn.v_proj.weight"));
  EXPECT_EQ(f->to_float(f->tensor("output.weight")), hf_floats(ck, "lm_head.weight"));
  EXPECT_EQ(f->tensor("token_embd.weight").ne, (std::vector<int64_t>{64, 320}));
  EXPECT_EQ(f->tensors().size(), 1u + 3 + 2 * 9);
}

TEST(GgufExport, Qwen2KeepsRotateHalfAndBiases) {
  TempDir tmp;
  const std::string dir = test::fixture_model_dir(tmp, "qwen2-bias");
  export_f32(dir, tmp.path("m.gguf"));
  auto f = GgufFile::open(tmp.path("m.gguf"));
  auto ck = io::Checkpoint::open(test::fixture_model("qwen2-bias"));
  EXPECT_EQ(f->at("general.architecture").as_string(), "qwen2");
  EXPECT_EQ(f->to_float(f->tensor("blk.0.attn_q.weight")), hf_floats(ck, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_EQ(f->to_float(f->tensor("blk.0.attn_k.bias")), hf_floats(ck, "model.layers.0.self_attn.k_proj.bias"));
  EXPECT_NE(f->find_tensor("blk.1.attn_v.bias"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.0.attn_output.bias"), nullptr);
}

TEST(GgufExport, LinearRopeScalingKeys) {
  TempDir tmp;
  export_f32(test::fixture_model_dir(tmp, "llama-coder-linear-rope"), tmp.path("m.gguf"));
  auto f = GgufFile::open(tmp.path("m.gguf"));
  EXPECT_EQ(f->at("llama.rope.scaling.type").as_string(), "linear");
  EXPECT_FLOAT_EQ(f->at("llama.rope.scaling.factor").as_f64(), 4.0);
  EXPECT_EQ(f->find_tensor("rope_freqs.weight"), nullptr);
}

TEST(GgufExport, Deepseek2SplitsKvBAndStacksExperts) {
  TempDir tmp;
  const std::string dir = test::fixture_model_dir(tmp, "deepseek-v3-tiny");
  const auto rep = export_f32(dir, tmp.path("m.gguf"));
  EXPECT_TRUE(rep.warnings.empty());
  auto f = GgufFile::open(tmp.path("m.gguf"));
  auto ck = io::Checkpoint::open(test::fixture_model("deepseek-v3-tiny"));
  EXPECT_EQ(f->at("general.architecture").as_string(), "deepseek2");
  const std::map<std::string, double> want = {
      {"deepseek2.attention.head_count_kv", 1},     {"deepseek2.attention.q_lora_rank", 48},
      {"deepseek2.attention.kv_lora_rank", 32},     {"deepseek2.attention.key_length", 40},
      {"deepseek2.attention.value_length", 32},     {"deepseek2.attention.key_length_mla", 24},
      {"deepseek2.attention.value_length_mla", 16}, {"deepseek2.rope.dimension_count", 8},
      {"deepseek2.leading_dense_block_count", 1},   {"deepseek2.expert_feed_forward_length", 32},
      {"deepseek2.expert_count", 8},                {"deepseek2.expert_shared_count", 2},
      {"deepseek2.expert_used_count", 2},           {"deepseek2.expert_weights_scale", 2.5},
      {"deepseek2.expert_gating_func", 2},          {"deepseek2.expert_group_count", 4},
      {"deepseek2.expert_group_used_count", 2},     {"deepseek2.rope.scaling.factor", 40},
      {"deepseek2.rope.scaling.original_context_length", 4096},
      {"deepseek2.rope.scaling.yarn_log_multiplier", 0.1},
  };
  for (const auto& [k, v] : want) EXPECT_NEAR(f->at(k).as_f64(), v, 1e-6) << k;
  EXPECT_TRUE(f->at("deepseek2.expert_weights_norm").as_bool());
  EXPECT_EQ(f->at("deepseek2.rope.scaling.type").as_string(), "yarn");

  // kv_b_proj [4 * (16 + 16), 32] viewed [head, nope + v, kvr].
  const auto kv = hf_floats(ck, "model.layers.1.self_attn.kv_b_proj.weight");
  const auto& kb = f->tensor("blk.1.attn_k_b.weight");
  const auto& vb = f->tensor("blk.1.attn_v_b.weight");
  ASSERT_EQ(kb.ne, (std::vector<int64_t>{16, 32, 4}));  // [heads, kvr, nope] innermost first
  ASSERT_EQ(vb.ne, (std::vector<int64_t>{32, 16, 4}));  // [heads, v, kvr]
  const auto k = f->to_float(kb), v = f->to_float(vb);
  for (int h = 0; h < 4; ++h)
    for (int c = 0; c < 32; ++c) {
      for (int d = 0; d < 16; ++d) ASSERT_EQ(k[(h * 32 + c) * 16 + d], kv[(h * 32 + d) * 32 + c]);
      for (int d = 0; d < 16; ++d) ASSERT_EQ(v[(h * 16 + d) * 32 + c], kv[(h * 32 + 16 + d) * 32 + c]);
    }
  // Experts stacked along the outermost dimension.
  const auto& up = f->tensor("blk.2.ffn_up_exps.weight");
  ASSERT_EQ(up.ne, (std::vector<int64_t>{64, 32, 8}));
  const auto ups = f->to_float(up);
  for (int e = 0; e < 8; ++e) {
    const auto x = hf_floats(ck, "model.layers.2.mlp.experts." + std::to_string(e) + ".up_proj.weight");
    ASSERT_TRUE(std::equal(x.begin(), x.end(), ups.begin() + e * 32 * 64)) << e;
  }
  EXPECT_EQ(f->to_float(f->tensor("blk.2.exp_probs_b.bias")), hf_floats(ck, "model.layers.2.mlp.gate.e_score_correction_bias"));
  EXPECT_EQ(f->tensor("blk.1.ffn_down_shexp.weight").ne, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(f->tensor("blk.0.ffn_gate.weight").ne, (std::vector<int64_t>{64, 128}));  // leading dense layer
  EXPECT_EQ(f->find_tensor("blk.0.ffn_gate_inp.weight"), nullptr);
  EXPECT_EQ(f->tensor("blk.1.attn_q_a_norm.weight").ne, (std::vector<int64_t>{48}));
}

TEST(GgufExport, Deepseek2WithoutQLoraWarnsAboutLlamaCpp) {
  TempDir tmp;
  const auto rep = export_f32(test::fixture_model_dir(tmp, "deepseek-v2-lite-tiny"), tmp.path("m.gguf"));
  ASSERT_EQ(rep.warnings.size(), 1u);
  EXPECT_NE(rep.warnings[0].find("27 layers"), std::string::npos);
  auto f = GgufFile::open(tmp.path("m.gguf"));
  EXPECT_EQ(f->find("deepseek2.attention.q_lora_rank"), nullptr);
  EXPECT_NE(f->find_tensor("blk.0.attn_q.weight"), nullptr);
  EXPECT_EQ(f->at("deepseek2.expert_gating_func").as_u64(), 1u);  // softmax
  EXPECT_EQ(f->find_tensor("blk.1.exp_probs_b.bias"), nullptr);   // greedy routing has no bias
  EXPECT_NEAR(f->at("deepseek2.rope.scaling.yarn_log_multiplier").as_f64(), 0.0707, 1e-6);
}

TEST(GgufExport, OutputTypes) {
  TempDir tmp;
  const std::string dir = test::fixture_model_dir(tmp, "deepseek-v3-tiny");
  auto ck = io::Checkpoint::open(test::fixture_model("deepseek-v3-tiny"));
  for (auto type : {GgufOutType::f16, GgufOutType::bf16, GgufOutType::q8_0}) {
    GgufExportOptions o;
    o.model_dir = dir;
    o.output_path = tmp.path(std::string("m-") + gguf_out_type_name(type) + ".gguf");
    o.out_type = type;
    o.tokenizer_pre = "gpt-2";
    export_gguf(o);
    auto f = GgufFile::open(o.output_path);
    const GgmlType mat = type == GgufOutType::f16 ? GgmlType::F16 : type == GgufOutType::bf16 ? GgmlType::BF16 : GgmlType::Q8_0;
    EXPECT_EQ(f->tensor("blk.1.attn_output.weight").type, mat);  // rows of 64
    EXPECT_EQ(f->tensor("blk.1.attn_norm.weight").type, GgmlType::F32);
    EXPECT_EQ(f->tensor("blk.1.exp_probs_b.bias").type, GgmlType::F32);
    EXPECT_EQ(f->tensor("blk.1.ffn_gate_inp.weight").type, GgmlType::F32);  // the router stays f32
    // attn_k_b rows are 16 long: q8_0 falls back to f16.
    EXPECT_EQ(f->tensor("blk.1.attn_k_b.weight").type, type == GgufOutType::q8_0 ? GgmlType::F16 : mat);
    EXPECT_EQ(f->at("general.file_type").as_u64(), type == GgufOutType::f16 ? 1u : type == GgufOutType::bf16 ? 32u : 7u);
    const auto got = f->to_float(f->tensor("blk.1.attn_output.weight"));
    const auto want = hf_floats(ck, "model.layers.1.self_attn.o_proj.weight");
    double max_err = 0;
    for (size_t i = 0; i < got.size(); ++i) max_err = std::max(max_err, std::fabs(static_cast<double>(got[i]) - want[i]));
    // bf16 weights survive f16/bf16 exactly at this scale; q8_0 within half a step (absmax/254).
    EXPECT_LE(max_err, type == GgufOutType::q8_0 ? 0.1 / 254 + 1e-4 : 1e-6) << gguf_out_type_name(type);
  }
}

TEST(GgufExport, TokenizerMetadataFromRealTokenizers) {
  EXPECT_EQ(detect_tokenizer_pre(test::fixture_tokenizer("deepseek-v3") + "/tokenizer.json"), "deepseek-v3");
  EXPECT_EQ(detect_tokenizer_pre(test::fixture_tokenizer("qwen2") + "/tokenizer.json"), "qwen2");
  EXPECT_EQ(detect_tokenizer_pre(test::fixture_tokenizer("llama3") + "/tokenizer.json"), "llama-bpe");

  io::GgufWriter w;
  const auto sum = add_tokenizer_metadata(w, test::fixture_tokenizer("deepseek-v3"), 129280);
  EXPECT_EQ(sum.pre, "deepseek-v3");
  EXPECT_EQ(sum.family, "deepseek-v3");
  EXPECT_EQ(sum.bos, 0);
  EXPECT_EQ(sum.eos, 1);
  EXPECT_EQ(w.find("tokenizer.ggml.bos_token_id")->as_u64(), 0u);
  EXPECT_TRUE(w.find("tokenizer.ggml.add_bos_token")->as_bool());
  EXPECT_FALSE(w.find("tokenizer.ggml.add_eos_token")->as_bool());
  const auto tokens = w.find("tokenizer.ggml.tokens")->as_strings();
  const auto types = w.find("tokenizer.ggml.token_type")->as_i64s();
  ASSERT_EQ(tokens.size(), 129280u);
  EXPECT_EQ(tokens[128803], "<\xEF\xBD\x9CUser\xEF\xBD\x9C>");
  EXPECT_EQ(types[128803], 3);   // control
  EXPECT_EQ(types[128814], 3);   // <｜tool▁sep｜>: not special in tokenizer.json, but looks special
  EXPECT_EQ(types[500], 1);      // normal
  EXPECT_EQ(tokens[129000], "[PAD129000]");
  EXPECT_EQ(types[129000], 5);   // unused padding up to the embedding rows
  EXPECT_EQ(w.find("tokenizer.ggml.merges")->items().size(), 127741u);
  EXPECT_NE(w.find("tokenizer.chat_template")->as_string().find("<\xEF\xBD\x9C" "Assistant"), std::string::npos);

  io::GgufWriter q;
  const auto qs = add_tokenizer_metadata(q, test::fixture_tokenizer("qwen2"), 151936);
  EXPECT_EQ(qs.family, "chatml");
  EXPECT_FALSE(qs.bos.has_value());
  EXPECT_EQ(qs.eos, 151645);  // <|im_end|> from tokenizer_config.json
  const auto qtypes = q.find("tokenizer.ggml.token_type")->as_i64s();
  const auto qtokens = q.find("tokenizer.ggml.tokens")->as_strings();
  EXPECT_EQ(qtokens[151667], "<think>");
  EXPECT_EQ(qtypes[151667], 4);  // user-defined: not special
  EXPECT_EQ(qtypes[151644], 3);
  EXPECT_EQ(q.find("tokenizer.ggml.merges")->items()[0].as_string(), "\xC4\xA0 \xC4\xA0");  // [a, b] -> "a b"

  // A tokenizer with more ids than the model's embedding is refused.
  io::GgufWriter small;
  EXPECT_THROW(add_tokenizer_metadata(small, test::fixture_tokenizer("qwen2"), 1000), Error);
}

TEST(GgufExport, RefusesBadInputsBeforeWriting) {
  TempDir tmp;
  const std::string dir = test::fixture_model_dir(tmp, "llama-gqa");
  const std::string out = tmp.path("m.gguf");
  auto expect_error = [&](const std::function<void()>& f, const std::string& fragment) {
    try {
      f();
      ADD_FAILURE() << "no error (expected: " << fragment << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    EXPECT_FALSE(test::fs::exists(out)) << fragment;
  };
  // No tokenizer.
  test::fs::rename(dir + "/tokenizer.json", dir + "/tokenizer.json.off");
  expect_error([&] { export_f32(dir, out); }, "no tokenizer.json");
  test::fs::rename(dir + "/tokenizer.json.off", dir + "/tokenizer.json");
  // The pre-tokenizer is detected (plain ByteLevel: gpt-2); one llama.cpp does not know is refused.
  EXPECT_EQ(export_f32(dir, out, "").tokenizer_pre, "gpt-2");
  test::fs::remove(out);
  auto tok = test::read_json_file(dir + "/tokenizer.json");
  auto odd = tok;
  odd["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}},
                                             {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  test::write_text(dir + "/tokenizer.json", odd.dump());
  expect_error([&] { export_f32(dir, out, ""); }, "cannot tell which llama.cpp pre-tokenizer");
  test::write_text(dir + "/tokenizer.json", tok.dump());
  // Shapes that do not match config.json.
  auto cfg = test::read_json_file(dir + "/config.json");
  auto bad = cfg;
  bad["intermediate_size"] = 96;
  test::write_text(dir + "/config.json", bad.dump());
  expect_error([&] { export_f32(dir, out); }, "do not belong together");
  // An unsupported architecture.
  bad = cfg;
  bad["model_type"] = "mistral";
  test::write_text(dir + "/config.json", bad.dump());
  expect_error([&] { export_f32(dir, out); }, "mistral");
  test::write_text(dir + "/config.json", cfg.dump());
  // An existing output is kept unless overwriting is asked for.
  test::write_text(out, "keep");
  try {
    export_f32(dir, out);
    ADD_FAILURE() << "overwrote an existing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exists"), std::string::npos);
  }
  std::ifstream in(out);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "keep");
  GgufExportOptions o;
  o.model_dir = dir;
  o.output_path = out;
  o.tokenizer_pre = "gpt-2";
  o.overwrite = true;
  export_gguf(o);
  EXPECT_NO_THROW(GgufFile::open(out));
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace dsft::exporter

namespace dsft::exporter {
namespace {

TEST(GgufExport, OllamaModelfile) {
  ModelfileOptions m;
  m.gguf_file = "./r1.gguf";
  m.adapter_file = "./adapter.gguf";
  m.family = "deepseek-v3";
  m.eos_token = "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
  m.system = "You are terse.";
  const std::string mf = render_modelfile(m);
  EXPECT_EQ(mf.find("FROM ./r1.gguf\n") != std::string::npos, true) << mf;
  EXPECT_NE(mf.find("ADAPTER ./adapter.gguf\n"), std::string::npos);
  EXPECT_NE(mf.find("TEMPLATE \"\"\""), std::string::npos);
  EXPECT_NE(mf.find("{{ .Content }}"), std::string::npos);
  EXPECT_NE(mf.find("PARAMETER stop \"<\xEF\xBD\x9CUser\xEF\xBD\x9C>\""), std::string::npos);
  EXPECT_NE(mf.find("PARAMETER stop \"" + m.eos_token + "\""), std::string::npos);
  EXPECT_NE(mf.find("SYSTEM \"\"\"You are terse.\"\"\""), std::string::npos);
  // Go-template actions balance.
  size_t open = 0, close = 0;
  for (size_t p = mf.find("{{"); p != std::string::npos; p = mf.find("{{", p + 2)) ++open;
  for (size_t p = mf.find("}}"); p != std::string::npos; p = mf.find("}}", p + 2)) ++close;
  EXPECT_EQ(open, close);
  m.family = "chatml";
  m.eos_token = "<|im_end|>";
  m.system = "say \"\"\" no";
  EXPECT_THROW(render_modelfile(m), Error);

  // export_gguf writes one beside the model when asked, naming the GGUF relative to it.
  test::TempDir tmp;
  const std::string dir = test::fixture_model_dir(tmp, "qwen2-bias");
  GgufExportOptions o;
  o.model_dir = dir;
  o.output_path = tmp.path("out/q.gguf");
  o.modelfile_path = tmp.path("out/Modelfile");
  o.tokenizer_pre = "gpt-2";
  test::fs::create_directories(tmp.path("out"));
  export_gguf(o);
  std::ifstream in(o.modelfile_path);
  const std::string written((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(written.find("FROM ./q.gguf\n"), std::string::npos) << written;
  EXPECT_NE(written.find("PARAMETER stop \"<|special_2|>\""), std::string::npos) << written;  // the eos token
}

}  // namespace
}  // namespace dsft::exporter
