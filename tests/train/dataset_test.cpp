// The training dataset: loss masks for Alpaca, multi-turn and text records, BOS handling, truncation
// and dropped records, packing, the token cache, the validation split, the data loader (order,
// resume, mixing) and error messages. Uses the real DeepSeek-V3 tokenizer fixture and a small
// SentencePiece model trained on the bundled sample data.
#include "dsft/train/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "dsft/text/chat_template.h"
#include "dsft/text/sentencepiece.h"
#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"

namespace fs = std::filesystem;
using namespace dsft;
using namespace dsft::train;

namespace {

const std::string kV3Dir = std::string(DSFT_FIXTURES_DIR) + "/tokenizers/deepseek-v3";
const std::string kSampleData = std::string(DSFT_SOURCE_DIR) + "/data/sample/faq_alpaca.jsonl";
const std::string kEos = "<｜end▁of▁sentence｜>";

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dsft::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class DatasetTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("dsft_dataset_test_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    v3_ = text::load_tokenizer(kV3Dir).release();
    v3_template_ = new text::ChatTemplate(text::ChatTemplate::resolve("deepseek-v3", kV3Dir));
    text::SentencePieceTrainOptions o;
    o.input_jsonl = kSampleData;
    o.output_dir = (root_ / "sp").string();
    o.vocab_size = 600;
    o.chat_template = "deepseek-v3";
    text::train_sentencepiece(o);
    sp_ = text::load_tokenizer(o.output_dir).release();
    sp_template_ = new text::ChatTemplate(text::ChatTemplate::resolve("auto", o.output_dir));
  }
  static void TearDownTestSuite() {
    delete v3_;
    delete sp_;
    delete v3_template_;
    delete sp_template_;
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Writes `lines` to a new file under the test's folder.
  static std::string write(const std::string& name, const std::vector<std::string>& lines) {
    std::string path = (root_ / name).string();
    std::ofstream f(path, std::ios::binary);
    for (const auto& l : lines) f << l << "\n";
    return path;
  }

  static std::string alpaca(const std::string& id, const std::string& instruction, const std::string& output,
                            const std::string& input = "") {
    nlohmann::json j = {
        {"instruction", instruction}, {"input", input}, {"output", output}, {"id", id}, {"source", "t"}};
    return j.dump();
  }

  static DatasetOptions opts(int64_t max_len = 512) {
    DatasetOptions o;
    o.max_seq_length = max_len;
    return o;
  }

  // The runs of consecutive target positions, as decoded text.
  static std::vector<std::string> target_runs(const text::Tokenizer& tok, const Sample& s) {
    std::vector<std::string> runs;
    std::vector<int32_t> cur;
    for (size_t i = 0; i <= s.ids.size(); ++i) {
      if (i < s.ids.size() && s.labels_mask[i]) {
        cur.push_back(s.ids[i]);
      } else if (!cur.empty()) {
        runs.push_back(tok.decode(cur));
        cur.clear();
      }
    }
    return runs;
  }

  static fs::path root_;
  static text::Tokenizer* v3_;
  static text::Tokenizer* sp_;
  static text::ChatTemplate* v3_template_;
  static text::ChatTemplate* sp_template_;
};

fs::path DatasetTest::root_;
text::Tokenizer* DatasetTest::v3_ = nullptr;
text::Tokenizer* DatasetTest::sp_ = nullptr;
text::ChatTemplate* DatasetTest::v3_template_ = nullptr;
text::ChatTemplate* DatasetTest::sp_template_ = nullptr;

bool same_samples(const std::vector<Sample>& a, const std::vector<Sample>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].ids != b[i].ids || a[i].labels_mask != b[i].labels_mask ||
        a[i].segment_ids != b[i].segment_ids || a[i].record_ids != b[i].record_ids)
      return false;
  return true;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.batch_size == b.batch_size && a.seq_len == b.seq_len && a.input_ids == b.input_ids &&
         a.labels_mask == b.labels_mask && a.segment_ids == b.segment_ids &&
         a.position_ids == b.position_ids && a.target_tokens == b.target_tokens;
}

}  // namespace

TEST_F(DatasetTest, AlpacaMaskCoversExactlyTheResponse) {
  std::string f = write("alpaca.jsonl", {alpaca("a1", "LX-107的重量是多少？", "LX-107的重量是2.1千克。"),
                                         alpaca("a2", "根据产品信息回答问题。", "LX-114是银色的。",
                                                "产品：空气净化器 LX-114。问题：它是什么颜色？")});
  for (auto [tok, tmpl] : {std::pair{sp_, sp_template_}, std::pair{v3_, v3_template_}}) {
    auto d = TokenizedDataset::build({f}, *tok, *tmpl, opts());
    ASSERT_EQ(d.samples().size(), 2u);
    const char* outputs[] = {"LX-107的重量是2.1千克。", "LX-114是银色的。"};
    for (size_t i = 0; i < 2; ++i) {
      const Sample& s = d.samples()[i];
      EXPECT_EQ(target_runs(*tok, s), std::vector<std::string>{outputs[i] + kEos}) << tmpl->name();
      // The response is the end of the record: the mask is one run up to the last token.
      EXPECT_EQ(s.labels_mask.back(), 1);
      EXPECT_EQ(s.record_ids, std::vector<std::string>{i == 0 ? "a1" : "a2"});
      EXPECT_TRUE(std::all_of(s.segment_ids.begin(), s.segment_ids.end(), [](int32_t x) { return x == 0; }));
    }
    // The prompt holds the instruction and the input.
    std::vector<int32_t> prompt;
    for (size_t t = 0; t < d.samples()[1].ids.size(); ++t)
      if (!d.samples()[1].labels_mask[t]) prompt.push_back(d.samples()[1].ids[t]);
    std::string prompt_text = tok->decode(prompt);
    EXPECT_TRUE(contains(prompt_text, "根据产品信息回答问题。\n\n产品：空气净化器 LX-114。")) << prompt_text;
    EXPECT_EQ(d.stats().target_tokens,
              std::count(d.samples()[0].labels_mask.begin(), d.samples()[0].labels_mask.end(), 1) +
                  std::count(d.samples()[1].labels_mask.begin(), d.samples()[1].labels_mask.end(), 1));
  }
}

TEST_F(DatasetTest, MultiTurnMasksEachAssistantTurn) {
  nlohmann::json rec = {{"id", "chat-1"},
                        {"source", "t"},
                        {"messages",
                         {{{"role", "system"}, {"content", "You answer briefly."}},
                          {{"role", "user"}, {"content", "What does LX-107 weigh?"}},
                          {{"role", "assistant"}, {"content", "2.1 kg."}},
                          {{"role", "user"}, {"content", "And its price?"}},
                          {{"role", "assistant"}, {"content", "199 yuan."}}}}};
  std::string f = write("chat.jsonl", {rec.dump()});
  auto d = TokenizedDataset::build({f}, *v3_, *v3_template_, opts());
  ASSERT_EQ(d.samples().size(), 1u);
  EXPECT_EQ(target_runs(*v3_, d.samples()[0]),
            (std::vector<std::string>{"2.1 kg." + kEos, "199 yuan." + kEos}));

  // train_on_inputs: every token but the first is a target.
  DatasetOptions o = opts();
  o.train_on_inputs = true;
  auto all = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  const Sample& s = all.samples()[0];
  EXPECT_EQ(s.ids, d.samples()[0].ids);
  EXPECT_EQ(s.labels_mask[0], 0);
  EXPECT_EQ(std::count(s.labels_mask.begin(), s.labels_mask.end(), 1), static_cast<long>(s.ids.size()) - 1);
}

TEST_F(DatasetTest, DeepSeekV3GetsExactlyOneBos) {
  ASSERT_TRUE(v3_->add_bos_for_training);
  ASSERT_TRUE(v3_->bos_id.has_value());
  const int32_t bos = *v3_->bos_id;
  std::string f =
      write("bos.jsonl", {alpaca("b1", "Hi", "Hello."), R"({"text": "Plain text here.", "id": "t1"})"});
  auto d = TokenizedDataset::build({f}, *v3_, *v3_template_, opts());
  ASSERT_EQ(d.samples().size(), 2u);
  for (const Sample& s : d.samples()) {
    EXPECT_EQ(s.ids[0], bos) << s.record_ids[0];
    EXPECT_EQ(std::count(s.ids.begin(), s.ids.end(), bos), 1) << s.record_ids[0];
  }
  // A template that writes no BOS (chatml) gets the tokenizer's one, once.
  auto chatml = text::ChatTemplate::resolve("chatml", kV3Dir);
  auto c = TokenizedDataset::build({f}, *v3_, chatml, opts());
  EXPECT_EQ(c.samples()[0].ids[0], bos);
  EXPECT_EQ(std::count(c.samples()[0].ids.begin(), c.samples()[0].ids.end(), bos), 1);
  // add_bos = false: the text record has none.
  DatasetOptions o = opts();
  o.add_bos = false;
  auto n = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  EXPECT_NE(n.samples()[1].ids[0], bos);
  // SentencePiece adds its own BOS to text; no second one.
  auto sp = TokenizedDataset::build({f}, *sp_, *sp_template_, opts());
  for (const Sample& s : sp.samples()) {
    EXPECT_EQ(s.ids[0], *sp_->bos_id);
    EXPECT_EQ(std::count(s.ids.begin(), s.ids.end(), *sp_->bos_id), 1);
  }
}

TEST_F(DatasetTest, TextRecordsTrainOnEveryTokenAndEndWithEos) {
  const std::string text = "LX-107 weighs 2.1 kg and costs 199 yuan.";
  std::string f = write("text.jsonl", {nlohmann::json({{"text", text}, {"id", "t1"}}).dump()});
  for (auto* tok : {v3_, sp_}) {
    auto d = TokenizedDataset::build({f}, *tok, *v3_template_, opts());
    const Sample& s = d.samples()[0];
    ASSERT_GE(s.ids.size(), 3u);
    EXPECT_EQ(s.ids.front(), *tok->bos_id);
    EXPECT_EQ(s.ids.back(), *tok->eos_id);
    EXPECT_EQ(tok->decode(std::vector<int32_t>(s.ids.begin() + 1, s.ids.end() - 1)), text);
    EXPECT_EQ(s.labels_mask[0], 0);
    EXPECT_EQ(std::count(s.labels_mask.begin(), s.labels_mask.end(), 1), static_cast<long>(s.ids.size()) - 1);
  }
  DatasetOptions o = opts();
  o.add_eos_to_text = false;
  auto d = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  EXPECT_NE(d.samples()[0].ids.back(), *v3_->eos_id);
}

TEST_F(DatasetTest, TruncationIsCountedAndEmptyRecordsDropped) {
  std::string long_output;
  for (int i = 0; i < 40; ++i) long_output += "word" + std::to_string(i) + " ";
  std::string long_prompt;
  for (int i = 0; i < 60; ++i) long_prompt += "prompt" + std::to_string(i) + " ";
  std::string f =
      write("trunc.jsonl", {alpaca("short", "Hi", "Hello."), alpaca("long-answer", "Hi", long_output),
                            alpaca("long-prompt", long_prompt, "ok")});
  auto full = TokenizedDataset::build({f}, *v3_, *v3_template_, opts(4096));
  EXPECT_EQ(full.stats().truncated, 0);
  const int64_t max_len = 40;
  ASSERT_LT(static_cast<int64_t>(full.samples()[0].ids.size()), max_len);
  ASSERT_GT(static_cast<int64_t>(full.samples()[1].ids.size()), max_len);
  auto d = TokenizedDataset::build({f}, *v3_, *v3_template_, opts(max_len));
  EXPECT_EQ(d.stats().truncated, 1);  // long-answer; long-prompt is dropped, not kept
  EXPECT_EQ(d.stats().truncated_tokens, static_cast<int64_t>(full.samples()[1].ids.size()) - max_len);
  EXPECT_EQ(d.stats().dropped_empty, 1);
  EXPECT_EQ(d.dropped_ids(), std::vector<std::string>{"long-prompt"});
  EXPECT_EQ(d.stats().records, 2);
  ASSERT_EQ(d.samples().size(), 2u);
  EXPECT_EQ(static_cast<int64_t>(d.samples()[1].ids.size()), max_len);
  // The kept part is the start of the full record.
  EXPECT_TRUE(
      std::equal(d.samples()[1].ids.begin(), d.samples()[1].ids.end(), full.samples()[1].ids.begin()));
  EXPECT_EQ(d.stats().tokens, static_cast<int64_t>(d.samples()[0].ids.size()) + max_len);
}

TEST_F(DatasetTest, PackingKeepsRecordsApart) {
  DatasetOptions o = opts(128);
  auto plain = TokenizedDataset::build({kSampleData}, *sp_, *sp_template_, o);
  o.packing = true;
  auto d = TokenizedDataset::build({kSampleData}, *sp_, *sp_template_, o);
  ASSERT_TRUE(d.packed());
  EXPECT_EQ(d.records().size(), plain.samples().size());
  EXPECT_LT(d.samples().size() * 3, plain.samples().size());  // short FAQ records pack densely
  EXPECT_EQ(d.stats().tokens, plain.stats().tokens);
  EXPECT_EQ(d.stats().target_tokens, plain.stats().target_tokens);

  std::map<std::string, const Sample*> by_id;
  for (const Sample& s : plain.samples()) by_id[s.record_ids[0]] = &s;
  std::set<std::string> seen;
  for (const Sample& s : d.samples()) {
    ASSERT_LE(static_cast<int64_t>(s.ids.size()), 128);
    ASSERT_EQ(s.ids.size(), s.labels_mask.size());
    ASSERT_EQ(s.ids.size(), s.segment_ids.size());
    // Segments are 0, 1, 2, ... in order, each a whole record with no target at its start.
    size_t start = 0;
    for (size_t k = 0; k < s.record_ids.size(); ++k) {
      const Sample& r = *by_id.at(s.record_ids[k]);
      EXPECT_TRUE(seen.insert(s.record_ids[k]).second);
      ASSERT_LE(start + r.ids.size(), s.ids.size());
      for (size_t t = 0; t < r.ids.size(); ++t) {
        ASSERT_EQ(s.segment_ids[start + t], static_cast<int32_t>(k));
        ASSERT_EQ(s.ids[start + t], r.ids[t]);
        ASSERT_EQ(s.labels_mask[start + t], t == 0 ? 0 : r.labels_mask[t]);
      }
      EXPECT_EQ(s.labels_mask[start], 0);
      start += r.ids.size();
    }
    EXPECT_EQ(start, s.ids.size());
  }
  EXPECT_EQ(seen.size(), plain.samples().size());

  // Positions restart at 0 for every record; padding is marked.
  DataLoader loader(d, 4, 7, *sp_->pad_id, nullptr, 0.0, false);
  Batch b = loader.next();
  ASSERT_EQ(b.batch_size, 4);
  for (int64_t r = 0; r < b.batch_size; ++r) {
    const Sample& s = d.samples()[static_cast<size_t>(r)];
    for (int64_t t = 0; t < b.seq_len; ++t) {
      size_t i = static_cast<size_t>(r * b.seq_len + t);
      if (t >= static_cast<int64_t>(s.ids.size())) {
        EXPECT_EQ(b.input_ids[i], *sp_->pad_id);
        EXPECT_EQ(b.segment_ids[i], -1);
        EXPECT_EQ(b.labels_mask[i], 0);
        EXPECT_EQ(b.position_ids[i], 0);
        continue;
      }
      bool starts =
          t == 0 || s.segment_ids[static_cast<size_t>(t)] != s.segment_ids[static_cast<size_t>(t - 1)];
      EXPECT_EQ(b.position_ids[i], starts ? 0 : b.position_ids[i - 1] + 1);
    }
  }
}

TEST_F(DatasetTest, CacheIsReusedAndRebuiltWhenStale) {
  const fs::path cache = root_ / "cache";
  std::vector<std::string> lines;
  for (int i = 0; i < 20; ++i)
    lines.push_back(
        alpaca("c" + std::to_string(i), "Question " + std::to_string(i), "Answer " + std::to_string(i)));
  std::string f = write("cached.jsonl", lines);
  DatasetOptions o = opts();
  o.cache_dir = cache.string();
  o.tokenizer_dir = kV3Dir;
  auto first = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  EXPECT_FALSE(first.stats().from_cache);
  ASSERT_TRUE(fs::is_regular_file(first.stats().cache_file));
  auto second = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  EXPECT_TRUE(second.stats().from_cache);
  EXPECT_TRUE(same_samples(first.samples(), second.samples()));
  EXPECT_EQ(first.stats().target_tokens, second.stats().target_tokens);

  // Another max_seq_length or template is another cache entry.
  DatasetOptions shorter = o;
  shorter.max_seq_length = 256;
  EXPECT_FALSE(TokenizedDataset::build({f}, *v3_, *v3_template_, shorter).stats().from_cache);
  auto chatml = text::ChatTemplate::resolve("chatml", kV3Dir);
  EXPECT_FALSE(TokenizedDataset::build({f}, *v3_, chatml, o).stats().from_cache);

  // So is another template source under the same name.
  const auto& st = v3_template_->special_tokens();
  std::string src = text::ChatTemplate::builtin_source("deepseek-v3");
  auto custom_a = text::ChatTemplate::from_source(src + "A", st, "custom");
  auto custom_b = text::ChatTemplate::from_source(src + "B", st, "custom");
  auto with_a = TokenizedDataset::build({f}, *v3_, custom_a, o);
  EXPECT_FALSE(with_a.stats().from_cache);
  EXPECT_TRUE(TokenizedDataset::build({f}, *v3_, custom_a, o).stats().from_cache);
  auto with_b = TokenizedDataset::build({f}, *v3_, custom_b, o);
  EXPECT_FALSE(with_b.stats().from_cache);
  EXPECT_NE(with_a.samples()[0].ids, with_b.samples()[0].ids);

  // A damaged file is noticed (checksum) and rebuilt to the same samples.
  {
    std::fstream io(first.stats().cache_file, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(100);
    char c;
    io.seekg(100);
    io.get(c);
    io.seekp(100);
    io.put(static_cast<char>(c ^ 0x5a));
  }
  auto repaired = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  EXPECT_FALSE(repaired.stats().from_cache);
  EXPECT_TRUE(same_samples(first.samples(), repaired.samples()));
  EXPECT_TRUE(TokenizedDataset::build({f}, *v3_, *v3_template_, o).stats().from_cache);
  // A truncated file likewise.
  fs::resize_file(first.stats().cache_file, 50);
  EXPECT_FALSE(TokenizedDataset::build({f}, *v3_, *v3_template_, o).stats().from_cache);

  // Changed data: rebuilt, not served from the old entry.
  lines[3] = alpaca("c3", "Question 3", "A different answer");
  write("cached.jsonl", lines);
  auto changed = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  EXPECT_FALSE(changed.stats().from_cache);
  EXPECT_NE(changed.samples()[3].ids, first.samples()[3].ids);
  EXPECT_EQ(target_runs(*v3_, changed.samples()[3]), std::vector<std::string>{"A different answer" + kEos});

  // Packing is applied after the cache: a packed build reuses the per-record entry.
  o.packing = true;
  auto packed = TokenizedDataset::build({f}, *v3_, *v3_template_, o);
  EXPECT_TRUE(packed.stats().from_cache);
  EXPECT_TRUE(packed.packed());
}

TEST_F(DatasetTest, SplitIsDeterministicAndIndependentOfFileOrder) {
  std::vector<std::string> lines;
  for (int i = 0; i < 400; ++i)
    lines.push_back(alpaca("r" + std::to_string(i), "Q" + std::to_string(i), "A" + std::to_string(i)));
  std::string fwd = write("split_fwd.jsonl", lines);
  std::reverse(lines.begin(), lines.end());
  std::string rev = write("split_rev.jsonl", lines);
  auto a = TokenizedDataset::build({fwd}, *sp_, *sp_template_, opts());
  auto b = TokenizedDataset::build({rev}, *sp_, *sp_template_, opts());
  auto ids = [](const TokenizedDataset& d) {
    std::set<std::string> s;
    for (const auto& x : d.records()) s.insert(x.record_ids[0]);
    return s;
  };
  auto [train_a, val_a] = a.split(0.2, 42);
  auto [train_b, val_b] = b.split(0.2, 42);
  EXPECT_EQ(ids(val_a), ids(val_b));
  EXPECT_EQ(ids(train_a), ids(train_b));
  EXPECT_EQ(val_a.size() + train_a.size(), 400u);
  EXPECT_NEAR(static_cast<double>(val_a.size()) / 400.0, 0.2, 0.06);
  for (const auto& id : ids(val_a)) EXPECT_EQ(ids(train_a).count(id), 0u);
  // Same seed, same split; another seed, another split.
  EXPECT_EQ(ids(a.split(0.2, 42).second), ids(val_a));
  EXPECT_NE(ids(a.split(0.2, 43).second), ids(val_a));
  // Samples travel with their record.
  std::map<std::string, std::vector<int32_t>> by_id;
  for (const auto& s : a.records()) by_id[s.record_ids[0]] = s.ids;
  for (const auto& s : val_a.samples()) EXPECT_EQ(s.ids, by_id.at(s.record_ids[0]));
  EXPECT_EQ(val_a.stats().records, static_cast<int64_t>(val_a.size()));
  // A packed dataset splits per record and packs each part.
  DatasetOptions o = opts(64);
  o.packing = true;
  auto p = TokenizedDataset::build({fwd}, *sp_, *sp_template_, o);
  auto [ptrain, pval] = p.split(0.2, 42);
  EXPECT_TRUE(ptrain.packed());
  EXPECT_TRUE(pval.packed());
  EXPECT_EQ(ids(pval), ids(val_a));
  EXPECT_LT(pval.samples().size(), pval.records().size());
  // A tiny fraction still yields a validation record.
  EXPECT_EQ(a.split(1e-9, 1).second.size(), 1u);
  EXPECT_FALSE(error_of([&] { a.split(1.5, 1); }).empty());
}

TEST_F(DatasetTest, LoaderOrderIsDeterministicPerEpoch) {
  auto d = TokenizedDataset::build({kSampleData}, *sp_, *sp_template_, opts());
  ASSERT_EQ(d.size(), 300u);
  DataLoader a(d, 8, 42, *sp_->pad_id), b(d, 8, 42, *sp_->pad_id), c(d, 8, 43, *sp_->pad_id);
  EXPECT_EQ(a.batches_per_epoch(), 38);  // 37 full batches and one of 4
  std::vector<std::multiset<std::vector<int64_t>>> epochs(2);
  bool differs_from_other_seed = false;
  std::vector<int64_t> first_rows[2];
  for (int e = 0; e < 2; ++e) {
    for (int64_t k = 0; k < a.batches_per_epoch(); ++k) {
      Batch x = a.next(), y = b.next(), z = c.next();
      ASSERT_TRUE(same_batch(x, y));
      differs_from_other_seed |= !same_batch(x, z);
      EXPECT_EQ(x.batch_size, k + 1 == a.batches_per_epoch() ? 4 : 8);
      EXPECT_EQ(a.epoch(), e);
      for (int64_t r = 0; r < x.batch_size; ++r) {
        std::vector<int64_t> row(x.input_ids.begin() + r * x.seq_len,
                                 x.input_ids.begin() + (r + 1) * x.seq_len);
        while (!row.empty() && row.back() == *sp_->pad_id) row.pop_back();
        if (k == 0 && r == 0) first_rows[e] = row;
        epochs[static_cast<size_t>(e)].insert(row);
      }
    }
  }
  EXPECT_TRUE(differs_from_other_seed);
  // Every epoch visits every sample once, in another order.
  std::multiset<std::vector<int64_t>> all;
  for (const auto& s : d.samples()) all.insert(std::vector<int64_t>(s.ids.begin(), s.ids.end()));
  EXPECT_EQ(epochs[0], all);
  EXPECT_EQ(epochs[1], all);
  EXPECT_NE(first_rows[0], first_rows[1]);
  // Without shuffling: dataset order.
  DataLoader in_order(d, 2, 42, *sp_->pad_id, nullptr, 0.0, false);
  Batch first = in_order.next();
  EXPECT_EQ(first.input_ids[0], d.samples()[0].ids[0]);
  EXPECT_EQ(first.target_tokens,
            std::count(d.samples()[0].labels_mask.begin(), d.samples()[0].labels_mask.end(), 1) +
                std::count(d.samples()[1].labels_mask.begin(), d.samples()[1].labels_mask.end(), 1));
}

TEST_F(DatasetTest, SeekResumesExactly) {
  auto d = TokenizedDataset::build({kSampleData}, *sp_, *sp_template_, opts());
  std::vector<std::string> general;
  for (int i = 0; i < 37; ++i)
    general.push_back(
        nlohmann::json({{"text", "general text " + std::to_string(i)}, {"id", "g" + std::to_string(i)}})
            .dump());
  auto mix = TokenizedDataset::build({write("general.jsonl", general)}, *sp_, *sp_template_, opts());
  DataLoader full(d, 7, 5, *sp_->pad_id, &mix, 0.3);
  const int64_t steps = full.batches_per_epoch() * 3 + 5;
  std::vector<Batch> reference;
  std::vector<std::pair<int64_t, int64_t>> positions;
  for (int64_t k = 0; k < steps; ++k) {
    positions.emplace_back(full.epoch(), full.index());
    reference.push_back(full.next());
  }
  for (int64_t at : {int64_t{0}, int64_t{3}, full.batches_per_epoch() - 1, full.batches_per_epoch(),
                     2 * full.batches_per_epoch() + 2}) {
    DataLoader resumed(d, 7, 5, *sp_->pad_id, &mix, 0.3);
    resumed.seek(positions[static_cast<size_t>(at)].first, positions[static_cast<size_t>(at)].second);
    for (int64_t k = at; k < steps; ++k)
      ASSERT_TRUE(same_batch(resumed.next(), reference[static_cast<size_t>(k)])) << at << " " << k;
  }
  // The end of an epoch is a valid position too: the next batch opens the next epoch.
  DataLoader end(d, 7, 5, *sp_->pad_id, &mix, 0.3);
  end.seek(1, end.samples_per_epoch());
  EXPECT_TRUE(same_batch(end.next(), reference[static_cast<size_t>(2 * full.batches_per_epoch())]));
  EXPECT_FALSE(error_of([&] { end.seek(0, end.samples_per_epoch() + 1); }).empty());
}

TEST_F(DatasetTest, MixingHitsTheRatio) {
  auto d = TokenizedDataset::build({kSampleData}, *sp_, *sp_template_, opts());
  std::vector<std::string> general;
  for (int i = 0; i < 1000; ++i)
    general.push_back(
        nlohmann::json({{"text", "zzz general " + std::to_string(i)}, {"id", "g" + std::to_string(i)}})
            .dump());
  auto mix = TokenizedDataset::build({write("general_big.jsonl", general)}, *sp_, *sp_template_, opts());
  std::set<std::vector<int64_t>> mix_rows;
  for (const auto& s : mix.samples()) mix_rows.insert(std::vector<int64_t>(s.ids.begin(), s.ids.end()));
  for (double ratio : {0.1, 0.25, 0.5}) {
    DataLoader loader(d, 16, 11, *sp_->pad_id, &mix, ratio);
    int64_t total = 0, from_mix = 0, first_half_mix = 0;
    std::set<std::vector<int64_t>> distinct_mix;
    const int64_t batches = loader.batches_per_epoch() * 2;
    for (int64_t k = 0; k < batches; ++k) {
      Batch b = loader.next();
      for (int64_t r = 0; r < b.batch_size; ++r) {
        std::vector<int64_t> row(b.input_ids.begin() + r * b.seq_len,
                                 b.input_ids.begin() + (r + 1) * b.seq_len);
        while (!row.empty() && row.back() == *sp_->pad_id) row.pop_back();
        ++total;
        if (mix_rows.count(row)) {
          ++from_mix;
          distinct_mix.insert(row);
          if (k < batches / 4) ++first_half_mix;
        }
      }
    }
    EXPECT_NEAR(static_cast<double>(from_mix) / static_cast<double>(total), ratio, 0.01) << ratio;
    // Interleaved through the stream, not appended; and the mix corpus is walked through.
    EXPECT_GT(first_half_mix, from_mix / 8) << ratio;
    EXPECT_EQ(static_cast<int64_t>(distinct_mix.size()), std::min<int64_t>(from_mix, 1000)) << ratio;
  }
  EXPECT_FALSE(error_of([&] { DataLoader(d, 4, 1, 0, nullptr, 0.2); }).empty());
  EXPECT_FALSE(error_of([&] { DataLoader(d, 4, 1, 0, &mix, 1.0); }).empty());
}

TEST_F(DatasetTest, BundledSampleTrainsWithDeepSeekTemplate) {
  DatasetOptions o = opts(256);
  o.num_threads = 1;
  auto d = TokenizedDataset::build({kSampleData}, *sp_, *sp_template_, o);
  o.num_threads = 4;
  EXPECT_TRUE(
      same_samples(d.samples(), TokenizedDataset::build({kSampleData}, *sp_, *sp_template_, o).samples()));
  EXPECT_EQ(sp_template_->name(), "deepseek-v3");
  EXPECT_EQ(d.stats().records, 300);
  EXPECT_EQ(d.stats().truncated, 0);
  EXPECT_EQ(d.stats().dropped_empty, 0);
  std::ifstream in(kSampleData);
  std::string line;
  size_t i = 0;
  while (std::getline(in, line)) {
    auto rec = nlohmann::json::parse(line);
    ASSERT_LT(i, d.samples().size());
    const Sample& s = d.samples()[i++];
    EXPECT_EQ(s.record_ids[0], rec["id"].get<std::string>());
    EXPECT_EQ(s.ids[0], *sp_->bos_id);
    EXPECT_EQ(target_runs(*sp_, s), std::vector<std::string>{rec["output"].get<std::string>() + kEos});
  }
}

TEST_F(DatasetTest, ErrorsNameFileAndLine) {
  auto build = [&](const std::string& f) {
    return TokenizedDataset::build({f}, *v3_, *v3_template_, opts());
  };
  std::string missing = (root_ / "nope.jsonl").string();
  EXPECT_TRUE(contains(error_of([&] { build(missing); }), missing + " does not exist"));

  std::string bad_json = write("bad.jsonl", {alpaca("ok", "Hi", "Hello."), "{\"instruction\": \"x\", "});
  std::string e = error_of([&] { build(bad_json); });
  EXPECT_TRUE(contains(e, bad_json + ":2")) << e;
  EXPECT_TRUE(contains(e, "JSON")) << e;

  std::string no_shape =
      write("shape.jsonl", {"", alpaca("ok", "Hi", "Hello."), R"({"question": "x", "id": "q1"})"});
  e = error_of([&] { build(no_shape); });
  EXPECT_TRUE(contains(e, no_shape + ":3")) << e;
  EXPECT_TRUE(contains(e, "q1")) << e;
  EXPECT_TRUE(contains(e, "none of 'text', 'instruction' or 'messages'")) << e;

  std::string two_users = write(
      "turns.jsonl",
      {R"({"id": "m1", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]})"});
  e = error_of([&] { build(two_users); });
  EXPECT_TRUE(contains(e, two_users + ":1")) << e;
  EXPECT_TRUE(contains(e, "two user turns")) << e;

  std::string no_output = write("noout.jsonl", {R"({"instruction": "x", "id": "n1"})"});
  EXPECT_TRUE(contains(error_of([&] { build(no_output); }), "output")) << error_of([&] { build(no_output); });

  std::string empty = write("empty.jsonl", {"", "  "});
  EXPECT_TRUE(contains(error_of([&] { build(empty); }), "hold no records"));

  // Every record loses its response to truncation: nothing left to train on.
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "prompt ";
  std::string all_dropped = write("dropped.jsonl", {alpaca("d1", long_prompt, "ok")});
  e = error_of([&] { TokenizedDataset::build({all_dropped}, *v3_, *v3_template_, opts(16)); });
  EXPECT_TRUE(contains(e, "no training records left")) << e;
  EXPECT_TRUE(contains(e, "max_seq_length=16")) << e;
}

TEST_F(DatasetTest, CollatePadsRight) {
  Sample a{{5, 6, 7}, {0, 1, 1}, {0, 0, 0}, {"a"}};
  Sample b{{8, 9, 10, 11, 12}, {0, 1, 0, 0, 1}, {0, 0, 1, 1, 1}, {"b", "c"}};
  Batch x = collate({&a, &b}, 99);
  EXPECT_EQ(x.batch_size, 2);
  EXPECT_EQ(x.seq_len, 5);
  EXPECT_EQ(x.input_ids, (std::vector<int64_t>{5, 6, 7, 99, 99, 8, 9, 10, 11, 12}));
  EXPECT_EQ(x.labels_mask, (std::vector<uint8_t>{0, 1, 1, 0, 0, 0, 1, 0, 0, 1}));
  EXPECT_EQ(x.segment_ids, (std::vector<int32_t>{0, 0, 0, -1, -1, 0, 0, 1, 1, 1}));
  EXPECT_EQ(x.position_ids, (std::vector<int64_t>{0, 1, 2, 0, 0, 0, 1, 0, 1, 2}));
  EXPECT_EQ(x.target_tokens, 4);
  Sample bad{{1, 2}, {0}, {0, 0}, {"bad"}};
  EXPECT_TRUE(contains(error_of([&] { collate({&bad}, 0); }), "sample bad has 2 ids but 1 mask entries"));
}
