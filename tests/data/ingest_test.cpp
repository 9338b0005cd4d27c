// ingest: CSV/TSV (quoting, BOM, delimiters, GBK), templates and rejects, JSON/JSONL records and
// dialogues, SQLite, atomic output, chunking, directories.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "data/ingest_util.h"
#include "dsft/data/ingest_text.h"
#include "dsft/data/record.h"

using namespace ingest_test;
using dsft::data::read_jsonl;
using dsft::data::run_ingest;
using nlohmann::json;

// ---- CSV ----

TEST(IngestCsv, QuotedNewlinesBomCrlfAndEscapedQuotes) {
  TempDir d;
  write(d / "specs.csv",
        "\xEF\xBB\xBFid,spec\r\n"
        "A1,\"line one\r\nline two\"\r\n"
        "A2,\"say \"\"hi\"\", ok\"\r\n"
        "A3,plain\r\n");
  auto o = options({d / "specs.csv"}, d / "out.jsonl");
  o.text_template = "产品{id}的规格是{spec}";
  auto s = run_ingest(o);
  EXPECT_EQ(s.written, 3u);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0]["text"], "产品A1的规格是line one\r\nline two");
  EXPECT_EQ(recs[0]["source"], "specs.csv:row 2");  // the header is row 1, as a spreadsheet shows it
  EXPECT_EQ(recs[0]["id"], "specs.csv:row2");
  EXPECT_EQ(recs[1]["text"], "产品A2的规格是say \"hi\", ok");
  EXPECT_EQ(recs[2]["source"], "specs.csv:row 4");
  for (const auto& r : recs) EXPECT_EQ(dsft::data::validate_record(r), "");
}

TEST(IngestCsv, ReaderHandlesRecordsAcrossBlockBoundaries) {
  // A quoted field far larger than the reader's first block, then normal rows.
  TempDir d;
  std::string big(3 << 20, 'x');
  big[100] = '\n';
  write(d / "big.csv", "a,b\n1,\"" + big + "\"\n2,two\n");
  std::FILE* f = std::fopen((d / "big.csv").c_str(), "rb");
  dsft::data::CsvReader r(f, "big.csv", 0);
  std::vector<std::string_view> fields;
  ASSERT_TRUE(r.next(fields));
  ASSERT_TRUE(r.next(fields));
  ASSERT_EQ(fields.size(), 2u);
  EXPECT_EQ(fields[1], big);
  ASSERT_TRUE(r.next(fields));
  EXPECT_EQ(fields[1], "two");
  EXPECT_EQ(r.line_number(), 4u);  // the big field spans lines 2-3
  EXPECT_FALSE(r.next(fields));
  std::fclose(f);
}

TEST(IngestCsv, DetectsDelimiterAndTsv) {
  TempDir d;
  write(d / "semi.csv", "name;price\nwidget;3,50\n");
  write(d / "t.tsv", "name\tprice\ngadget\t7\n");
  auto o = options({d / "semi.csv", d / "t.tsv"}, d / "out.jsonl");
  run_ingest(o);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 2u);
  // Without a template a row becomes "column: value" lines.
  EXPECT_EQ(recs[0]["text"], "name: widget\nprice: 3,50");
  EXPECT_EQ(recs[1]["text"], "name: gadget\nprice: 7");
}

TEST(IngestCsv, GbkFileFromExcelIsDetectedAndConverted) {
  TempDir d;
  write(d / "utf8.csv", "编号,规格\r\nA1,不锈钢，耐腐蚀\r\nA2,\"铝合金\r\n轻便\"\r\n");
  std::string cmd = "iconv -f UTF-8 -t GBK " + (d / "utf8.csv") + " > " + (d / "gbk.csv");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  ASSERT_NE(read(d / "gbk.csv"), read(d / "utf8.csv"));
  auto o = options({d / "gbk.csv"}, d / "out.jsonl");
  o.text_template = "产品{编号}：{规格}";
  run_ingest(o);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0]["text"], "产品A1：不锈钢，耐腐蚀");
  EXPECT_EQ(recs[1]["text"], "产品A2：铝合金\r\n轻便");
  // Declared as UTF-8 it is rejected with the place and a hint.
  o.encoding = "utf-8";
  std::string err = ingest_error(o);
  EXPECT_NE(err.find("not valid UTF-8"), std::string::npos) << err;
  EXPECT_NE(err.find("--encoding"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(d / "out.jsonl.tmp"));
}

TEST(IngestCsv, DetectEncodingRules) {
  EXPECT_EQ(dsft::data::detect_encoding("plain ascii", true, "x"), "utf-8");
  EXPECT_EQ(dsft::data::detect_encoding("\xE4\xBD\xA0\xE5\xA5\xBD", true, "x"), "utf-8");  // 你好 UTF-8
  EXPECT_EQ(dsft::data::detect_encoding("\xC4\xE3\xBA\xC3", true, "x"), "gb18030");        // 你好 GBK
  EXPECT_EQ(dsft::data::detect_encoding("\xE4\xBD", false, "x"), "utf-8");                 // cut sequence
  EXPECT_THROW(dsft::data::detect_encoding(std::string("\x00\xFF\xFE\x80", 4), true, "x"), dsft::Error);
}

// ---- templates, missing fields, rejects ----

TEST(IngestTemplate, EscapesAndErrors) {
  dsft::data::RowTemplate t("{{{a}}} and {b}{a}", "--template");
  ASSERT_EQ(t.fields().size(), 2u);
  std::string out;
  t.render(out, {"X", "Y"});
  EXPECT_EQ(out, "{X} and YX");
  EXPECT_THROW(dsft::data::RowTemplate("{open", "--template"), dsft::UsageError);
  EXPECT_THROW(dsft::data::RowTemplate("a } b", "--template"), dsft::UsageError);
  EXPECT_THROW(dsft::data::RowTemplate("{}", "--template"), dsft::UsageError);
}

TEST(IngestTemplate, MissingFieldIsAnErrorNamingRowAndField) {
  TempDir d;
  write(d / "specs.csv", "id,spec\nA1,steel\nA2,\nA3,alu\n");
  auto o = options({d / "specs.csv"}, d / "out.jsonl");
  o.text_template = "产品{id}的规格是{spec}";
  std::string err = ingest_error(o);
  EXPECT_NE(err.find("specs.csv:row 3"), std::string::npos) << err;
  EXPECT_NE(err.find("'spec'"), std::string::npos) << err;
  EXPECT_NE(err.find("--skip-missing"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(d / "out.jsonl"));  // nothing half-written

  o.skip_missing = true;
  auto s = run_ingest(o);
  EXPECT_EQ(s.written, 2u);
  EXPECT_EQ(s.rejected, 1u);
  EXPECT_EQ(s.rejects_path, d / "out.rejects.jsonl");
  auto rej = read_jsonl(d / "out.rejects.jsonl");
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0]["source"], "specs.csv:row 3");
  EXPECT_NE(rej[0]["reason"].get<std::string>().find("'spec'"), std::string::npos);
  EXPECT_EQ(rej[0]["data"]["id"], "A2");
  EXPECT_EQ(read_jsonl(d / "out.jsonl").size(), 2u);
}

TEST(IngestTemplate, UnknownColumnIsReportedWithAHint) {
  TempDir d;
  write(d / "specs.csv", "id,spec\nA1,steel\n");
  auto o = options({d / "specs.csv"}, d / "out.jsonl");
  o.text_template = "{id}: {spek}";
  std::string err = ingest_error(o);
  EXPECT_NE(err.find("no column 'spek'"), std::string::npos) << err;
  EXPECT_NE(err.find("did you mean 'spec'"), std::string::npos) << err;
}

TEST(IngestTemplate, InstructionOutputPairsAndColumnShapes) {
  TempDir d;
  write(d / "faq.csv", "q,a\nWhat is X?,X is a widget.\n");
  write(d / "alpaca.csv", "instruction,input,output\nTranslate,hello,你好\n");
  auto o = options({d / "faq.csv"}, d / "out.jsonl");
  o.instruction_template = "Answer: {q}";
  o.output_template = "{a}";
  run_ingest(o);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["instruction"], "Answer: What is X?");
  EXPECT_EQ(recs[0]["input"], "");
  EXPECT_EQ(recs[0]["output"], "X is a widget.");

  run_ingest(options({d / "alpaca.csv"}, d / "out2.jsonl"));
  recs = read_jsonl(d / "out2.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["instruction"], "Translate");
  EXPECT_EQ(recs[0]["input"], "hello");
  EXPECT_EQ(recs[0]["output"], "你好");
  EXPECT_EQ(dsft::data::validate_record(recs[0]), "");
}

TEST(IngestTemplate, EmptyRowsAreCountedNotWritten) {
  TempDir d;
  write(d / "t.csv", "a,b\n1,2\n,\n\n3,4\n");
  auto s = run_ingest(options({d / "t.csv"}, d / "out.jsonl"));
  EXPECT_EQ(s.written, 2u);
  EXPECT_EQ(s.empty, 1u);
  EXPECT_NE(s.one_line().find("1 empty"), std::string::npos) << s.one_line();
}

// ---- JSON / JSONL / dialogues ----

TEST(IngestJson, RecordsKeepShapeIdAndExtraKeys) {
  TempDir d;
  write(d / "in.jsonl",
        "{\"text\":\"hello\",\"lang\":\"en\"}\n"
        "\n"
        "{\"id\":\"q7\",\"instruction\":\"Add\",\"input\":\"1+1\",\"output\":\"2\"}\n"
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}"
        "]}\n"
        "{\"name\":\"widget\",\"price\":3.5,\"tags\":[\"a\"],\"note\":null}\n"
        "\"just a string\"\n");
  run_ingest(options({d / "in.jsonl"}, d / "out.jsonl"));
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 5u);
  EXPECT_EQ(recs[0]["text"], "hello");
  EXPECT_EQ(recs[0]["lang"], "en");
  EXPECT_EQ(recs[0]["source"], "in.jsonl:line 1");
  EXPECT_EQ(recs[1]["id"], "q7");
  EXPECT_EQ(recs[1]["source"], "in.jsonl:line 3");
  EXPECT_EQ(recs[2]["messages"][1]["content"], "hello");
  EXPECT_EQ(recs[3]["text"], "name: widget\nprice: 3.5\ntags: [\"a\"]");
  EXPECT_EQ(recs[4]["text"], "just a string");
  for (const auto& r : recs) EXPECT_EQ(dsft::data::validate_record(r), "") << r.dump();
}

TEST(IngestJson, ShareGptIsConvertedAndValidated) {
  TempDir d;
  write(d / "chat.json", R"([
    {"id": "c1", "system": "Be brief.", "conversations": [
      {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
      {"from": "human", "value": "Weather?"}, {"from": "function_call", "value": "{\"name\":\"w\"}"},
      {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]},
    {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
    {"conversations": [{"from": "alien", "value": "q"}]}
  ])");
  auto o = options({d / "chat.json"}, d / "out.jsonl");
  o.format = "sharegpt";
  std::string err = ingest_error(o);
  EXPECT_NE(err.find("chat.json:item 2"), std::string::npos) << err;
  EXPECT_NE(err.find("two user turns"), std::string::npos) << err;
  EXPECT_NE(err.find("--skip-invalid"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(d / "out.jsonl"));

  o.skip_invalid = true;
  auto s = run_ingest(o);
  EXPECT_EQ(s.written, 1u);
  EXPECT_EQ(s.rejected, 3u);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  const json& m = recs[0]["messages"];
  ASSERT_EQ(m.size(), 7u);
  EXPECT_EQ(m[0]["role"], "system");
  EXPECT_EQ(m[1]["role"], "user");
  EXPECT_EQ(m[2]["role"], "assistant");
  EXPECT_EQ(m[4]["role"], "assistant");
  EXPECT_EQ(m[5]["role"], "tool");
  EXPECT_EQ(recs[0]["id"], "c1");
  EXPECT_FALSE(recs[0].contains("conversations"));
  auto rej = read_jsonl(d / "out.rejects.jsonl");
  ASSERT_EQ(rej.size(), 3u);
  EXPECT_NE(rej[1]["reason"].get<std::string>().find("is empty"), std::string::npos) << rej[1].dump();
  EXPECT_NE(rej[2]["reason"].get<std::string>().find("'alien'"), std::string::npos) << rej[2].dump();
}

TEST(IngestJson, AlpacaArrayAndInvalidLines) {
  TempDir d;
  write(d / "a.json", R"([{"instruction":"i1","output":"o1"},{"instruction":"i2","input":null,"output":"o2"},
                          {"instruction":"i3"}])");
  auto o = options({d / "a.json"}, d / "out.jsonl");
  o.format = "alpaca";
  o.skip_invalid = true;
  auto s = run_ingest(o);
  EXPECT_EQ(s.written, 2u);
  EXPECT_EQ(s.rejected, 1u);
  auto recs = read_jsonl(d / "out.jsonl");
  EXPECT_EQ(recs[1]["input"], "");
  EXPECT_EQ(recs[1]["source"], "a.json:item 2");

  write(d / "bad.jsonl", "{\"text\":\"ok\"}\n{not json\n");
  std::string err = ingest_error(options({d / "bad.jsonl"}, d / "out2.jsonl"));
  EXPECT_NE(err.find("bad.jsonl:line 2"), std::string::npos) << err;
  EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;
}

TEST(IngestJson, OpenAiContentPartsAreJoined) {
  TempDir d;
  write(
      d / "m.jsonl",
      R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":"c"}]})"
      "\n");
  run_ingest(options({d / "m.jsonl"}, d / "out.jsonl"));
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["messages"][0]["content"], "ab");
}

TEST(IngestJson, TemplatesOverJsonObjects) {
  TempDir d;
  write(d / "p.jsonl", "{\"id\":1,\"spec\":\"steel\"}\n{\"id\":2,\"spec\":null}\n");
  auto o = options({d / "p.jsonl"}, d / "out.jsonl");
  o.text_template = "产品{id}的规格是{spec}";
  std::string err = ingest_error(o);
  EXPECT_NE(err.find("p.jsonl:line 2"), std::string::npos) << err;
  EXPECT_NE(err.find("'spec'"), std::string::npos) << err;
  o.skip_missing = true;
  run_ingest(o);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["text"], "产品1的规格是steel");
}

// ---- SQLite ----

static void make_sqlite(const std::string& path) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* sql =
      "CREATE TABLE products(id INTEGER PRIMARY KEY, name TEXT, spec TEXT, price REAL);"
      "INSERT INTO products VALUES (1, '螺丝', 'M3 不锈钢', 0.5), (2, 'bolt', NULL, 1.25), (3, 'nut', 'M4', "
      "2);";
  char* err = nullptr;
  ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_close(db);
}

TEST(IngestSqlite, QueryRowsThroughTemplate) {
  TempDir d;
  make_sqlite(d / "shop.db");
  auto o = options({d / "shop.db"}, d / "out.jsonl");
  o.query = "SELECT id, name, spec, price FROM products ORDER BY id";
  o.text_template = "产品{name}的规格是{spec}，价格{price}";
  std::string err = ingest_error(o);
  EXPECT_NE(err.find("shop.db:row 2"), std::string::npos) << err;  // spec is NULL
  EXPECT_NE(err.find("'spec'"), std::string::npos) << err;
  o.skip_missing = true;
  auto s = run_ingest(o);
  EXPECT_EQ(s.written, 2u);
  EXPECT_EQ(s.rejected, 1u);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0]["text"], "产品螺丝的规格是M3 不锈钢，价格0.5");
  EXPECT_EQ(recs[0]["source"], "shop.db:row 1");
  EXPECT_EQ(recs[1]["text"], "产品nut的规格是M4，价格2.0");

  // The URL form, and the column-lines default.
  auto o2 = options({"sqlite://" + (d / "shop.db")}, d / "out2.jsonl");
  o2.query = "SELECT name, spec FROM products WHERE id = 2";
  run_ingest(o2);
  recs = read_jsonl(d / "out2.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["text"], "name: bolt");
}

TEST(IngestSqlite, MissingQueryNamesTheTables) {
  TempDir d;
  make_sqlite(d / "shop.db");
  auto o = options({d / "shop.db"}, d / "out.jsonl");
  try {
    run_ingest(o);
    FAIL() << "expected a usage error";
  } catch (const dsft::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("products"), std::string::npos) << e.what();
  }
}

// ---- atomic output ----

TEST(IngestAtomic, FailureKeepsThePreviousOutputAndLeavesNoTempFile) {
  TempDir d;
  write(d / "good.csv", "a\n1\n");
  write(d / "bad.jsonl", "{\"text\":\"ok\"}\n[1,2]\n");
  write(d / "out.jsonl", "previous\n");
  std::string err = ingest_error(options({d / "good.csv", d / "bad.jsonl"}, d / "out.jsonl"));
  EXPECT_NE(err.find("bad.jsonl:line 2"), std::string::npos) << err;
  EXPECT_EQ(read(d / "out.jsonl"), "previous\n");
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(d.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 3u);  // good.csv, bad.jsonl, out.jsonl: no temp file left behind
}

// ---- chunking ----

static std::set<std::string> words_of(const std::string& s) {
  std::set<std::string> w;
  std::istringstream in(s);
  std::string x;
  while (in >> x) w.insert(x);
  return w;
}

TEST(IngestChunk, NeverInsideAWordAndOverlaps) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "Sentence number " + std::to_string(i) + " has several words in it. ";
  auto chunks = dsft::data::chunk_text(text, 500, 100);
  ASSERT_GT(chunks.size(), 5u);
  auto all = words_of(text);
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_LE(chunks[i].size(), 500u);
    for (const auto& w : words_of(chunks[i]))
      EXPECT_TRUE(all.count(w)) << "cut word '" << w << "' in chunk " << i;
    EXPECT_EQ(chunks[i].rfind("Sentence", 0), 0u) << chunks[i].substr(0, 40);  // starts at a sentence
    if (i + 1 < chunks.size()) {
      EXPECT_EQ(chunks[i].back(), '.');
      // The next chunk starts with text taken from the end of this one.
      std::string head = chunks[i + 1].substr(0, 30);
      EXPECT_NE(chunks[i].find(head, chunks[i].size() - 110), std::string::npos)
          << "no overlap after chunk " << i;
    }
  }
  // Every sentence appears in some chunk.
  for (int i = 0; i < 300; i += 37)
    EXPECT_TRUE(std::any_of(chunks.begin(), chunks.end(), [&](const std::string& c) {
      return c.find("Sentence number " + std::to_string(i) + " has") != std::string::npos;
    }));
}

TEST(IngestChunk, ChineseSentencesAndLongWords) {
  std::string zh;
  for (int i = 0; i < 50; ++i) zh += "这是第" + std::to_string(i) + "句话，用来测试分块。";
  auto chunks = dsft::data::chunk_text(zh, 60, 0);
  ASSERT_GT(chunks.size(), 5u);
  std::string joined;
  for (const auto& c : chunks) {
    EXPECT_EQ(c.substr(c.size() - 3), "。") << c;  // ends at a Chinese full stop
    joined += c;
  }
  EXPECT_EQ(joined, zh);  // no overlap: the chunks are the text
  std::string longword(300, 'a');
  auto c2 = dsft::data::chunk_text("short " + longword + " tail", 100, 10);
  ASSERT_EQ(c2.size(), 3u);
  EXPECT_EQ(c2[1], longword);  // a word longer than a chunk is kept whole
  EXPECT_EQ(dsft::data::chunk_text("  tiny text  ", 100, 10), std::vector<std::string>{"tiny text"});
  EXPECT_TRUE(dsft::data::chunk_text(" \n ", 100, 10).empty());
}

// ---- documents without Office (HTML, Markdown, text) and directories ----

TEST(IngestDocuments, HtmlVisibleTextOnly) {
  std::string t = dsft::data::html_text(
      "<html><head><title>T</title><style>p{color:red}</style></head><body>"
      "<script>var secret=1;</script><h1>Title</h1><p>First   para\n with <b>bold</b>.</p>"
      "<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>x<br>y</body></html>");
  EXPECT_EQ(t, "Title\n\nFirst para with bold.\n\none\ntwo\n\na | b\n\nx\ny");
}

TEST(IngestDocuments, DirectoryWithIncludeExcludeAndChunkSources) {
  TempDir d;
  std::string para;
  for (int i = 0; i < 40; ++i) para += "Word" + std::to_string(i) + " is here. ";
  write(d / "docs/a.md", "# Guide\n\n" + para + "\n\n" + para);
  write(d / "docs/sub/b.txt", "small text");
  write(d / "docs/sub/c.html", "<p>hello <script>x</script>world</p>");
  write(d / "docs/skip.txt", "excluded");
  write(d / "docs/image.png", std::string("\x89PNG\0\0", 6));
  write(d / "docs/.hidden.txt", "hidden");
  auto o = options({d / "docs"}, d / "out.jsonl");
  o.exclude = {"skip*"};
  o.chunk_size = 300;
  o.chunk_overlap = 50;
  auto s = run_ingest(o);
  EXPECT_EQ(s.skipped_files, 1u);  // image.png
  auto recs = read_jsonl(d / "out.jsonl");
  std::vector<std::string> sources;
  for (auto& r : recs) sources.push_back(r["source"]);
  ASSERT_GE(recs.size(), 5u);
  EXPECT_EQ(sources[0], "docs/a.md:chunk 1");
  EXPECT_EQ(sources[1], "docs/a.md:chunk 2");
  EXPECT_EQ(sources[sources.size() - 2], "docs/sub/b.txt:chunk 1");
  EXPECT_EQ(recs.back()["text"], "hello world");
  for (auto& r : recs) EXPECT_EQ(r["text"].get<std::string>().find("excluded"), std::string::npos);
  for (auto& r : recs) EXPECT_LE(r["text"].get<std::string>().size(), 300u);

  o.include = {"*.html"};
  o.exclude.clear();
  s = run_ingest(o);
  EXPECT_EQ(s.written, 1u);
}

TEST(IngestJson, JsonLinesNamedJsonAndBomArray) {
  TempDir d;
  write(d / "lines.json", "{\"text\":\"a\"}\n{\"text\":\"b\"}\n");
  write(d / "bom.json", "\xEF\xBB\xBF[{\"text\":\"c\"}]");
  run_ingest(options({d / "lines.json", d / "bom.json"}, d / "out.jsonl"));
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[1]["source"], "lines.json:line 2");
  EXPECT_EQ(recs[2]["text"], "c");
}

TEST(IngestCsv, TooManyFieldsIsInvalidButTrailingEmptyFieldsAreNot) {
  TempDir d;
  write(d / "t.csv", "a,b\n1,2,,\n3,4,5\n");
  auto o = options({d / "t.csv"}, d / "out.jsonl");
  std::string err = ingest_error(o);
  EXPECT_NE(err.find("t.csv:row 3: the row has 3 fields but the header has 2"), std::string::npos) << err;
  o.skip_invalid = true;
  auto s = run_ingest(o);
  EXPECT_EQ(s.written, 1u);
  EXPECT_EQ(s.rejected, 1u);
}

TEST(IngestCsv, Utf16TabSeparatedAsExcelSavesUnicodeText) {
  TempDir d;
  write(d / "utf8.txt", "名称\t价格\r\n螺丝\t0.5\r\n");
  std::string cmd =
      "iconv -f UTF-8 -t UTF-16 " + (d / "utf8.txt") + " > " + (d / "unicode.tsv");  // with a BOM
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  run_ingest(options({d / "unicode.tsv"}, d / "out.jsonl"));
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["text"], "名称: 螺丝\n价格: 0.5");
}
