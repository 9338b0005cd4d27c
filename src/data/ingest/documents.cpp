// Text extraction from documents: PDF (poppler-cpp, text per page), the Office formats (libzip
// opens the package, pugixml reads its XML parts) and HTML (gumbo).
#include <gumbo.h>
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>
#include <zip.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <pugixml.hpp>

#include "dsft/data/ingest_text.h"
#include "dsft/util/error.h"

namespace dsft::data {

// ---- PDF ----

std::vector<std::string> pdf_pages(const std::string& path) {
  // poppler prints parser complaints to stderr; a malformed file surfaces as a failed load.
  poppler::set_debug_error_function([](const std::string&, void*) {}, nullptr);
  std::unique_ptr<poppler::document> doc(poppler::document::load_from_file(path));
  if (!doc) throw Error("cannot read PDF " + path + " (not a PDF file, or damaged)");
  if (doc->is_locked())
    throw Error("PDF " + path + " is encrypted with a password; decrypt it before ingesting");
  std::vector<std::string> pages;
  for (int i = 0; i < doc->pages(); ++i) {
    std::unique_ptr<poppler::page> page(doc->create_page(i));
    if (!page) {
      pages.emplace_back();
      continue;
    }
    poppler::byte_array utf8 = page->text().to_utf8();
    std::string text(utf8.begin(), utf8.end());
    // Pages end with a form feed in poppler's output; lines end with \n.
    text.erase(std::remove(text.begin(), text.end(), '\f'), text.end());
    pages.push_back(std::move(text));
  }
  return pages;
}

// ---- Office packages ----

namespace {

class ZipPackage {
 public:
  explicit ZipPackage(const std::string& path) : path_(path) {
    int err = 0;
    z_ = zip_open(path.c_str(), ZIP_RDONLY, &err);
    if (!z_) throw Error("cannot open " + path + " as an Office file (it is not a zip package)");
  }
  ~ZipPackage() { zip_discard(z_); }
  ZipPackage(const ZipPackage&) = delete;
  ZipPackage& operator=(const ZipPackage&) = delete;

  bool has(const std::string& name) const { return zip_name_locate(z_, name.c_str(), 0) >= 0; }

  std::string read(const std::string& name) const {
    zip_stat_t st;
    if (zip_stat(z_, name.c_str(), 0, &st) != 0)
      throw Error(path_ + " has no part '" + name + "' (not a complete Office file)");
    zip_file_t* f = zip_fopen(z_, name.c_str(), 0);
    if (!f) throw Error("cannot open part '" + name + "' of " + path_);
    std::string out(st.size, '\0');
    zip_int64_t got = zip_fread(f, out.data(), st.size);
    zip_fclose(f);
    if (got < 0 || static_cast<zip_uint64_t>(got) != st.size)
      throw Error("cannot read part '" + name + "' of " + path_);
    return out;
  }

  void parse(const std::string& name, pugi::xml_document& doc) const {
    std::string xml = read(name);
    auto r = doc.load_buffer(xml.data(), xml.size());
    if (!r) throw Error(path_ + ": part '" + name + "' is not valid XML (" + r.description() + ")");
  }

 private:
  std::string path_;
  zip_t* z_ = nullptr;
};

// Relationship id -> target part name, resolved against `base_dir` ("xl/", "ppt/").
std::map<std::string, std::string> relationships(const ZipPackage& zip, const std::string& rels_part,
                                                 const std::string& base_dir) {
  std::map<std::string, std::string> out;
  pugi::xml_document doc;
  zip.parse(rels_part, doc);
  for (auto rel : doc.child("Relationships").children("Relationship")) {
    std::string target = rel.attribute("Target").as_string();
    if (!target.empty() && target[0] == '/')
      target = target.substr(1);
    else
      target = base_dir + target;
    out[rel.attribute("Id").as_string()] = target;
  }
  return out;
}

bool name_is(const pugi::xml_node& n, const char* local) {
  const char* name = n.name();
  const char* colon = std::strchr(name, ':');
  return std::strcmp(colon ? colon + 1 : name, local) == 0;
}

// Text of a WordprocessingML paragraph: runs' w:t, tabs and breaks; deleted text and field
// codes are not visible and are skipped.
void word_runs(const pugi::xml_node& node, std::string& out) {
  for (auto c : node.children()) {
    if (c.type() != pugi::node_element) continue;
    std::string_view n = c.name();
    if (n == "w:t")
      out += c.text().get();
    else if (n == "w:tab")
      out += '\t';
    else if (n == "w:br" || n == "w:cr")
      out += '\n';
    else if (n == "w:delText" || n == "w:instrText" || n == "w:rPr" || n == "w:pPr")
      continue;
    else
      word_runs(c, out);
  }
}

void word_block(const pugi::xml_node& node, std::vector<std::string>& paras);

std::string word_cell(const pugi::xml_node& tc) {
  std::vector<std::string> paras;
  word_block(tc, paras);
  std::string s;
  for (auto& p : paras) {
    if (!s.empty()) s += ' ';
    s += p;
  }
  return s;
}

void word_block(const pugi::xml_node& node, std::vector<std::string>& paras) {
  for (auto c : node.children()) {
    std::string_view n = c.name();
    if (n == "w:p") {
      std::string t;
      word_runs(c, t);
      if (t.find_first_not_of(" \t\n") != std::string::npos) paras.push_back(std::move(t));
    } else if (n == "w:tbl") {
      // A table becomes one block: a line per row, cells separated by " | ".
      std::string table;
      for (auto tr : c.children("w:tr")) {
        std::string row;
        bool first = true;
        for (auto tc : tr.children("w:tc")) {
          if (!first) row += " | ";
          first = false;
          row += word_cell(tc);
        }
        if (row.find_first_not_of(" |") == std::string::npos) continue;
        if (!table.empty()) table += '\n';
        table += row;
      }
      if (!table.empty()) paras.push_back(std::move(table));
    } else if (n == "w:sdt" || n == "w:sdtContent" || n == "w:customXml" || n == "w:ins" ||
               n == "w:smartTag") {
      word_block(c, paras);
    }
  }
}

// DrawingML paragraphs (a:p) anywhere under `node`, in document order.
void drawing_paragraphs(const pugi::xml_node& node, std::vector<std::string>& paras) {
  for (auto c : node.children()) {
    if (c.type() != pugi::node_element) continue;
    if (name_is(c, "p") && std::strncmp(c.name(), "a:", 2) == 0) {
      std::string t;
      for (auto r : c.children()) {
        if (name_is(r, "r") || name_is(r, "fld"))
          t += r.child("a:t").text().get();
        else if (name_is(r, "br"))
          t += '\n';
      }
      if (t.find_first_not_of(" \t\n") != std::string::npos) paras.push_back(std::move(t));
    } else {
      drawing_paragraphs(c, paras);
    }
  }
}

}  // namespace

std::string docx_text(const std::string& path) {
  ZipPackage zip(path);
  pugi::xml_document doc;
  zip.parse("word/document.xml", doc);
  auto body = doc.child("w:document").child("w:body");
  if (!body) throw Error(path + ": word/document.xml has no w:body (not a Word document)");
  std::vector<std::string> paras;
  word_block(body, paras);
  std::string out;
  for (auto& p : paras) {
    if (!out.empty()) out += "\n\n";
    out += p;
  }
  return out;
}

std::vector<std::string> pptx_slides(const std::string& path) {
  ZipPackage zip(path);
  pugi::xml_document pres;
  zip.parse("ppt/presentation.xml", pres);
  auto rels = relationships(zip, "ppt/_rels/presentation.xml.rels", "ppt/");
  std::vector<std::string> slides;
  // Slide order is the order of p:sldIdLst, not the numbers in the part names.
  for (auto sld : pres.child("p:presentation").child("p:sldIdLst").children("p:sldId")) {
    auto it = rels.find(sld.attribute("r:id").as_string());
    if (it == rels.end())
      throw Error(path + ": slide relationship '" + sld.attribute("r:id").as_string() + "' is missing");
    pugi::xml_document slide;
    zip.parse(it->second, slide);
    std::vector<std::string> paras;
    drawing_paragraphs(slide.document_element(), paras);
    std::string text;
    for (auto& p : paras) {
      if (!text.empty()) text += '\n';
      text += p;
    }
    slides.push_back(std::move(text));
  }
  return slides;
}

// ---- XLSX ----

namespace {

size_t column_index(std::string_view ref) {  // "BC12" -> 54 (0-based)
  size_t col = 0;
  for (char c : ref) {
    if (c >= 'A' && c <= 'Z')
      col = col * 26 + (c - 'A' + 1);
    else if (c >= 'a' && c <= 'z')
      col = col * 26 + (c - 'a' + 1);
    else
      break;
  }
  return col == 0 ? 0 : col - 1;
}

std::string shared_string_text(const pugi::xml_node& si) {
  std::string s;
  for (auto c : si.children()) {
    if (name_is(c, "t"))
      s += c.text().get();
    else if (name_is(c, "r"))
      s += c.child("t").text().get();  // rich-text runs; rPh (phonetic) skipped
  }
  return s;
}

// Whether a number format shows a date/time: built-in ids, or a custom code with date letters
// outside quotes and [brackets].
bool is_date_format(int id, const std::string& code) {
  if ((id >= 14 && id <= 22) || (id >= 45 && id <= 47)) return true;
  if (code.empty()) return false;
  bool quoted = false, bracket = false;
  for (char c : code) {
    if (c == '"')
      quoted = !quoted;
    else if (!quoted && c == '[')
      bracket = true;
    else if (!quoted && c == ']')
      bracket = false;
    else if (!quoted && !bracket && std::strchr("dmyhsDMYHS", c))
      return true;
  }
  return false;
}

std::string format_number(const std::string& v) {
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0') return v;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15g", d);  // 0.30000000000000004 -> 0.3, as Excel shows it
  return buf;
}

std::string format_date(const std::string& v) {
  char* end = nullptr;
  double serial = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || serial < 0 || serial > 2958465) return v;
  // 1900 date system: day 0 = 1899-12-30 (Excel's phantom 1900-02-29 absorbed for serial >= 61).
  long days = static_cast<long>(std::floor(serial));
  double frac = serial - std::floor(serial);
  long z = days - 25569 + 719468;  // days since 1970-01-01, then civil_from_days (H. Hinnant)
  long era = (z >= 0 ? z : z - 146096) / 146097;
  long doe = z - era * 146097;
  long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  long y = yoe + era * 400;
  long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  long mp = (5 * doy + 2) / 153;
  long d = doy - (153 * mp + 2) / 5 + 1;
  long m = mp < 10 ? mp + 3 : mp - 9;
  if (m <= 2) ++y;
  char buf[128];
  long secs = std::lround(frac * 86400);
  if (days == 0 && secs > 0)
    std::snprintf(buf, sizeof buf, "%02ld:%02ld:%02ld", secs / 3600, secs / 60 % 60, secs % 60);
  else if (secs > 0 && secs < 86400)
    std::snprintf(buf, sizeof buf, "%04ld-%02ld-%02ld %02ld:%02ld:%02ld", y, m, d, secs / 3600,
                  secs / 60 % 60, secs % 60);
  else
    std::snprintf(buf, sizeof buf, "%04ld-%02ld-%02ld", y, m, d);
  return buf;
}

}  // namespace

std::vector<XlsxSheet> xlsx_sheets(const std::string& path) {
  ZipPackage zip(path);
  pugi::xml_document wb;
  zip.parse("xl/workbook.xml", wb);
  auto rels = relationships(zip, "xl/_rels/workbook.xml.rels", "xl/");
  std::vector<std::string> shared;
  if (zip.has("xl/sharedStrings.xml")) {
    pugi::xml_document sst;
    zip.parse("xl/sharedStrings.xml", sst);
    for (auto si : sst.document_element().children("si")) shared.push_back(shared_string_text(si));
  }
  std::vector<bool> date_style;  // per cellXfs index
  if (zip.has("xl/styles.xml")) {
    pugi::xml_document st;
    zip.parse("xl/styles.xml", st);
    std::map<int, std::string> codes;
    for (auto f : st.document_element().child("numFmts").children("numFmt"))
      codes[f.attribute("numFmtId").as_int()] = f.attribute("formatCode").as_string();
    for (auto xf : st.document_element().child("cellXfs").children("xf")) {
      int id = xf.attribute("numFmtId").as_int();
      auto it = codes.find(id);
      date_style.push_back(is_date_format(id, it == codes.end() ? "" : it->second));
    }
  }
  std::vector<XlsxSheet> sheets;
  for (auto s : wb.document_element().child("sheets").children("sheet")) {
    XlsxSheet sheet;
    sheet.name = s.attribute("name").as_string();
    auto it = rels.find(s.attribute("r:id").as_string());
    if (it == rels.end()) throw Error(path + ": sheet '" + sheet.name + "' has no part in the package");
    pugi::xml_document ws;
    zip.parse(it->second, ws);
    size_t next_row = 1;
    for (auto row : ws.document_element().child("sheetData").children("row")) {
      size_t rn = row.attribute("r").as_ullong(next_row);
      next_row = rn + 1;
      std::vector<std::string> cells;
      size_t next_col = 0;
      for (auto c : row.children("c")) {
        const char* ref = c.attribute("r").as_string();
        size_t col = *ref ? column_index(ref) : next_col;
        next_col = col + 1;
        std::string t = c.attribute("t").as_string();
        std::string v = c.child("v").text().get();
        std::string value;
        if (t == "s") {
          size_t idx = static_cast<size_t>(std::strtoull(v.c_str(), nullptr, 10));
          if (v.empty() || idx >= shared.size())
            throw Error(path + ": sheet '" + sheet.name + "' cell " + ref + " names shared string " + v +
                        " which does not exist");
          value = shared[idx];
        } else if (t == "inlineStr") {
          value = shared_string_text(c.child("is"));
        } else if (t == "b") {
          value = v == "1" ? "TRUE" : "FALSE";
        } else if (t == "str" || t == "e") {
          value = v;
        } else if (!v.empty()) {
          size_t style = c.attribute("s").as_uint(0);
          value = style < date_style.size() && date_style[style] ? format_date(v) : format_number(v);
        }
        if (value.empty()) continue;
        if (cells.size() <= col) cells.resize(col + 1);
        cells[col] = std::move(value);
      }
      if (cells.empty()) continue;
      sheet.row_numbers.push_back(rn);
      sheet.rows.push_back(std::move(cells));
    }
    sheets.push_back(std::move(sheet));
  }
  return sheets;
}

// ---- HTML ----

namespace {

struct HtmlText {
  std::string out;
  int pending = 0;  // line breaks owed before the next text: 1 newline, 2 blank line
  bool space = false;

  void brk(int n) { pending = std::max(pending, n); }
  void text(std::string_view s, bool pre) {
    for (char c : s) {
      bool ws = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
      if (!pre && ws) {
        space = true;
        continue;
      }
      if (pending > 0) {
        if (!out.empty()) out.append(static_cast<size_t>(pending), '\n');
        pending = 0;
        space = false;
      } else if (space && !out.empty() && out.back() != '\n') {
        out.push_back(' ');
      }
      space = false;
      out.push_back(c);
    }
  }
};

bool is_block(GumboTag t) {
  switch (t) {
    case GUMBO_TAG_P:
    case GUMBO_TAG_DIV:
    case GUMBO_TAG_H1:
    case GUMBO_TAG_H2:
    case GUMBO_TAG_H3:
    case GUMBO_TAG_H4:
    case GUMBO_TAG_H5:
    case GUMBO_TAG_H6:
    case GUMBO_TAG_UL:
    case GUMBO_TAG_OL:
    case GUMBO_TAG_DL:
    case GUMBO_TAG_TABLE:
    case GUMBO_TAG_BLOCKQUOTE:
    case GUMBO_TAG_PRE:
    case GUMBO_TAG_SECTION:
    case GUMBO_TAG_ARTICLE:
    case GUMBO_TAG_HEADER:
    case GUMBO_TAG_FOOTER:
    case GUMBO_TAG_NAV:
    case GUMBO_TAG_ASIDE:
    case GUMBO_TAG_MAIN:
    case GUMBO_TAG_FIGURE:
    case GUMBO_TAG_FORM:
    case GUMBO_TAG_ADDRESS:
    case GUMBO_TAG_HR:
    case GUMBO_TAG_FIELDSET:
    case GUMBO_TAG_DETAILS:
    case GUMBO_TAG_CAPTION:
      return true;
    default:
      return false;
  }
}

void walk(const GumboNode* node, HtmlText& t, bool pre) {
  if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA) {
    t.text(node->v.text.text, pre);
    return;
  }
  if (node->type == GUMBO_NODE_WHITESPACE) {
    if (pre)
      t.text(node->v.text.text, true);
    else
      t.space = true;
    return;
  }
  if (node->type != GUMBO_NODE_ELEMENT && node->type != GUMBO_NODE_DOCUMENT &&
      node->type != GUMBO_NODE_TEMPLATE)
    return;
  const GumboVector* children =
      node->type == GUMBO_NODE_DOCUMENT ? &node->v.document.children : &node->v.element.children;
  GumboTag tag = node->type == GUMBO_NODE_DOCUMENT ? GUMBO_TAG_HTML : node->v.element.tag;
  switch (tag) {  // not visible
    case GUMBO_TAG_SCRIPT:
    case GUMBO_TAG_STYLE:
    case GUMBO_TAG_NOSCRIPT:
    case GUMBO_TAG_TEMPLATE:
    case GUMBO_TAG_HEAD:
    case GUMBO_TAG_IFRAME:
    case GUMBO_TAG_OBJECT:
    case GUMBO_TAG_SVG:
    case GUMBO_TAG_CANVAS:
    case GUMBO_TAG_SELECT:
    case GUMBO_TAG_BUTTON:
      return;
    default:
      break;
  }
  if (node->type == GUMBO_NODE_TEMPLATE) return;
  if (tag == GUMBO_TAG_BR) {
    t.brk(1);
    return;
  }
  bool block = is_block(tag);
  bool line = tag == GUMBO_TAG_LI || tag == GUMBO_TAG_TR || tag == GUMBO_TAG_DT || tag == GUMBO_TAG_DD;
  if (block) t.brk(2);
  if (line) t.brk(1);
  bool cell = tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH;
  if (cell && node->index_within_parent > 0 && !t.out.empty() && t.pending == 0)
    t.text(" |", false), t.space = true;
  for (unsigned i = 0; i < children->length; ++i)
    walk(static_cast<const GumboNode*>(children->data[i]), t,
         pre || tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_TEXTAREA);
  if (block) t.brk(2);
  if (line) t.brk(1);
}

}  // namespace

std::string html_text(std::string_view html) {
  GumboOutput* g = gumbo_parse_with_options(&kGumboDefaultOptions, html.data(), html.size());
  HtmlText t;
  walk(g->document, t, false);
  gumbo_destroy_output(&kGumboDefaultOptions, g);
  return t.out;
}

}  // namespace dsft::data
