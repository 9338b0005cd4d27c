// ingest of real documents made by LibreOffice (tests/data/fixtures/ingest/README.md): PDF pages,
// DOCX paragraphs and tables, PPTX slides in order, XLSX rows with dates.
#include <gtest/gtest.h>

#include "data/ingest_util.h"
#include "dsft/data/ingest_text.h"
#include "dsft/data/record.h"

using namespace ingest_test;
using dsft::data::read_jsonl;
using dsft::data::run_ingest;

static std::string fixture(const std::string& name) {
  return std::string(DSFT_SOURCE_DIR) + "/tests/data/fixtures/ingest/" + name;
}

static bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(IngestPdf, TextPerPage) {
  auto pages = dsft::data::pdf_pages(fixture("manual.pdf"));
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_TRUE(has(pages[0], "Installation manual")) << pages[0];
  EXPECT_TRUE(has(pages[0], "Step one: unpack the widget")) << pages[0];
  EXPECT_TRUE(has(pages[1], "Clean the widget once a month")) << pages[1];
  EXPECT_TRUE(has(pages[1], "每月用干布清洁一次")) << pages[1];
  EXPECT_FALSE(has(pages[1], "Step one")) << pages[1];
  EXPECT_TRUE(has(pages[2], "warranty terms")) << pages[2];

  TempDir d;
  auto s = run_ingest(options({fixture("manual.pdf")}, d / "out.jsonl"));
  EXPECT_EQ(s.written, 3u);
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[1]["source"], "manual.pdf:page 2");
  EXPECT_EQ(recs[1]["id"], "manual.pdf:page2");
  // A small chunk size splits a page into chunks named by page and chunk.
  auto o = options({fixture("manual.pdf")}, d / "out2.jsonl");
  o.chunk_size = 40;
  o.chunk_overlap = 10;
  run_ingest(o);
  recs = read_jsonl(d / "out2.jsonl");
  ASSERT_GT(recs.size(), 3u);
  EXPECT_EQ(recs[0]["source"], "manual.pdf:page 1:chunk 1");
  EXPECT_EQ(recs[0]["id"], "manual.pdf:page1.chunk1");
  for (auto& r : recs) EXPECT_EQ(dsft::data::validate_record(r), "");
}

TEST(IngestDocx, ParagraphsAndTables) {
  std::string t = dsft::data::docx_text(fixture("report.docx"));
  EXPECT_TRUE(has(t, "Widget X200 product report\n\nThe X200 widget is made of stainless steel.")) << t;
  EXPECT_TRUE(has(t, "产品X200采用不锈钢制造。它在盐水中耐腐蚀。")) << t;
  EXPECT_TRUE(has(t, "Model | Weight\nX200 | 1.2 kg")) << t;
  EXPECT_TRUE(has(t, "Warranty: two years")) << t;
  TempDir d;
  run_ingest(options({fixture("report.docx")}, d / "out.jsonl"));
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0]["source"], "report.docx:chunk 1");
}

TEST(IngestPptx, TextPerSlideInOrder) {
  auto slides = dsft::data::pptx_slides(fixture("deck.pptx"));
  ASSERT_EQ(slides.size(), 4u);
  EXPECT_EQ(slides[0], "Quarterly review\nSales grew 12 percent.\n销售额增长了百分之十二。");
  EXPECT_EQ(slides[1], "Next quarter\nLaunch the X300 gadget.");
  EXPECT_EQ(slides[2], "");
  EXPECT_EQ(slides[3], "Questions?");
  TempDir d;
  auto s = run_ingest(options({fixture("deck.pptx")}, d / "out.jsonl"));
  EXPECT_EQ(s.written, 3u);
  EXPECT_EQ(s.empty, 1u);  // the empty slide is counted, not written
  auto recs = read_jsonl(d / "out.jsonl");
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[2]["source"], "deck.pptx:slide 4");
}

TEST(IngestXlsx, RowsWithHeaderDatesAndTemplates) {
  auto sheets = dsft::data::xlsx_sheets(fixture("products.xlsx"));
  ASSERT_EQ(sheets.size(), 1u);
  EXPECT_EQ(sheets[0].name, "products");
  ASSERT_EQ(sheets[0].rows.size(), 4u);
  EXPECT_EQ(sheets[0].rows[0], (std::vector<std::string>{"sku", "name", "price", "added"}));
  EXPECT_EQ(sheets[0].rows[1], (std::vector<std::string>{"X200", "Widget", "19.5", "2024-03-01"}));
  EXPECT_EQ(sheets[0].rows[2][1], "Gadget, large");

  TempDir d;
  auto o = options({fixture("products.xlsx")}, d / "out.jsonl");
  o.text_template = "{name}（{sku}）售价{price}元，{added}上架";
  std::string err = ingest_error(o);
  EXPECT_TRUE(has(err, "products.xlsx:products:row 4")) << err;
  EXPECT_TRUE(has(err, "'added'")) << err;
  o.skip_missing = true;
  auto s = run_ingest(o);
  EXPECT_EQ(s.written, 2u);
  EXPECT_EQ(s.rejected, 1u);
  auto recs = read_jsonl(d / "out.jsonl");
  EXPECT_EQ(recs[0]["text"], "Widget（X200）售价19.5元，2024-03-01上架");
  EXPECT_EQ(recs[1]["source"], "products.xlsx:products:row 3");
}
