// Markup to text with a real HTML5 parser (gumbo): what a reader would see, with paragraph and
// line breaks kept, script/style dropped and entities decoded.
#include <gumbo.h>

#include <cstring>
#include <string>

#include "dsft/data/clean_filters.h"

namespace dsft::data {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

const char* const known_elements[] = {
    "html", "head", "body", "title", "meta", "link", "div", "p", "br", "span", "a", "b", "i", "u", "em",
    "strong", "small", "sub", "sup", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd",
    "table", "thead", "tbody", "tfoot", "tr", "td", "th", "img", "hr", "pre", "code", "blockquote", "script",
    "style", "section", "article", "header", "footer", "nav", "aside", "main", "figure", "figcaption", "form",
    "input", "button", "label", "select", "option", "textarea", "iframe", "font", "center", "noscript",
    "caption", "col", "colgroup", "abbr", "cite", "mark", "del", "ins", "s", "strike", "tt", "kbd", "var",
    "svg", "video", "audio", "source", "wbr", "details", "summary", "address", "time"};

bool known_element(std::string_view name) {
  for (const char* e : known_elements)
    if (name.size() == std::strlen(e) && name == e) return true;
  return false;
}

}  // namespace

bool looks_like_markup(std::string_view s) {
  size_t p = 0;
  while ((p = s.find_first_of("<&", p)) != std::string_view::npos) {
    if (s[p] == '&') {
      // &name; &#123; &#x1F;
      size_t q = p + 1;
      if (q < s.size() && s[q] == '#') {
        ++q;
        bool hex = q < s.size() && (s[q] == 'x' || s[q] == 'X');
        if (hex) ++q;
        size_t d = q;
        while (q < s.size() && q - d < 7 &&
               ((s[q] >= '0' && s[q] <= '9') || (hex && std::strchr("abcdefABCDEF", s[q]) && s[q] != 0)))
          ++q;
        if (q > d && q < s.size() && s[q] == ';') return true;
      } else {
        size_t d = q;
        while (q < s.size() && q - d < 10 && is_alpha(s[q])) ++q;
        if (q - d >= 2 && q < s.size() && s[q] == ';') return true;
      }
      ++p;
      continue;
    }
    size_t q = p + 1;
    if (q < s.size() && s[q] == '!') {
      if (s.compare(q, 3, "!--") == 0) return true;
      std::string head;
      for (size_t k = q + 1; k < s.size() && k < q + 8; ++k) head.push_back(lower(s[k]));
      if (head == "doctype") return true;
    }
    bool closing = q < s.size() && s[q] == '/';
    if (closing) ++q;
    size_t n0 = q;
    std::string name;
    while (q < s.size() && (is_alpha(s[q]) || (q > n0 && ((s[q] >= '0' && s[q] <= '9') || s[q] == '-' || s[q] == ':'))))
      name.push_back(lower(s[q++]));
    if (!name.empty() && q < s.size()) {
      // The tag must end at '>' (possibly after attributes / a '/'), with no '<' in between.
      size_t gt = s.find('>', q);
      size_t lt = s.find('<', q);
      bool ends = gt != std::string_view::npos && (lt == std::string_view::npos || gt < lt);
      bool name_ends = s[q] == '>' || s[q] == ' ' || s[q] == '/' || s[q] == '\t' || s[q] == '\n';
      if (ends && name_ends) {
        if (closing && s[q] == '>') return true;  // </anything>
        if (known_element(name)) {
          // An opening tag of a known element with attributes must look like attributes.
          if (s[q] == '>' || s[q] == '/') return true;
          std::string_view attrs = s.substr(q, gt - q);
          if (attrs.find('=') != std::string_view::npos) return true;
        }
      }
    }
    p = p + 1;
  }
  return false;
}

namespace {

bool is_block(GumboTag t) {
  switch (t) {
    case GUMBO_TAG_P: case GUMBO_TAG_DIV: case GUMBO_TAG_H1: case GUMBO_TAG_H2: case GUMBO_TAG_H3:
    case GUMBO_TAG_H4: case GUMBO_TAG_H5: case GUMBO_TAG_H6: case GUMBO_TAG_UL: case GUMBO_TAG_OL:
    case GUMBO_TAG_LI: case GUMBO_TAG_DL: case GUMBO_TAG_DT: case GUMBO_TAG_DD: case GUMBO_TAG_TABLE:
    case GUMBO_TAG_TR: case GUMBO_TAG_BLOCKQUOTE: case GUMBO_TAG_PRE: case GUMBO_TAG_SECTION:
    case GUMBO_TAG_ARTICLE: case GUMBO_TAG_HEADER: case GUMBO_TAG_FOOTER: case GUMBO_TAG_NAV:
    case GUMBO_TAG_ASIDE: case GUMBO_TAG_MAIN: case GUMBO_TAG_FIGURE: case GUMBO_TAG_FIGCAPTION:
    case GUMBO_TAG_FORM: case GUMBO_TAG_FIELDSET: case GUMBO_TAG_ADDRESS: case GUMBO_TAG_HR:
    case GUMBO_TAG_TITLE: case GUMBO_TAG_DETAILS: case GUMBO_TAG_SUMMARY: case GUMBO_TAG_CAPTION:
    case GUMBO_TAG_THEAD: case GUMBO_TAG_TBODY: case GUMBO_TAG_TFOOT: case GUMBO_TAG_BODY: case GUMBO_TAG_CENTER:
      return true;
    default:
      return false;
  }
}

// Paragraph-like blocks get an empty line around them; other blocks a line break.
bool is_paragraph(GumboTag t) {
  switch (t) {
    case GUMBO_TAG_P: case GUMBO_TAG_H1: case GUMBO_TAG_H2: case GUMBO_TAG_H3: case GUMBO_TAG_H4:
    case GUMBO_TAG_H5: case GUMBO_TAG_H6: case GUMBO_TAG_BLOCKQUOTE: case GUMBO_TAG_PRE: case GUMBO_TAG_TABLE:
    case GUMBO_TAG_UL: case GUMBO_TAG_OL: case GUMBO_TAG_TITLE:
      return true;
    default:
      return false;
  }
}

bool is_dropped(GumboTag t) {
  return t == GUMBO_TAG_SCRIPT || t == GUMBO_TAG_STYLE || t == GUMBO_TAG_NOSCRIPT || t == GUMBO_TAG_TEMPLATE ||
         t == GUMBO_TAG_IFRAME || t == GUMBO_TAG_OBJECT ||
         t == GUMBO_TAG_SVG || t == GUMBO_TAG_MATH;
}

struct TextBuilder {
  std::string out;
  bool pending_space = false;

  void breaks(int n) {  // ensure the output ends with at least n newlines (none at the start)
    pending_space = false;
    while (!out.empty() && out.back() == ' ') out.pop_back();
    if (out.empty()) return;
    int have = 0;
    for (size_t i = out.size(); i-- > 0 && out[i] == '\n';) ++have;
    for (; have < n; ++have) out.push_back('\n');
  }
  void text(const char* s, bool preformatted) {
    if (preformatted) {
      if (pending_space) out.push_back(' ');
      pending_space = false;
      out.append(s);
      return;
    }
    for (const char* p = s; *p; ++p) {
      char c = *p;
      if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f') {
        pending_space = true;
        continue;
      }
      if (pending_space && !out.empty() && out.back() != '\n') out.push_back(' ');
      pending_space = false;
      out.push_back(c);
    }
  }
};

void walk(const GumboNode* node, TextBuilder& tb, bool pre) {
  switch (node->type) {
    case GUMBO_NODE_TEXT:
    case GUMBO_NODE_CDATA:
      tb.text(node->v.text.text, pre);
      return;
    case GUMBO_NODE_WHITESPACE:
      if (pre) {
        tb.text(node->v.text.text, true);
      } else {
        tb.pending_space = true;
      }
      return;
    case GUMBO_NODE_ELEMENT:
    case GUMBO_NODE_TEMPLATE: {
      GumboTag tag = node->v.element.tag;
      if (is_dropped(tag)) return;
      if (tag == GUMBO_TAG_BR) {
        tb.pending_space = false;
        while (!tb.out.empty() && tb.out.back() == ' ') tb.out.pop_back();
        if (!tb.out.empty()) tb.out.push_back('\n');  // each <br> is a line break of its own
        return;
      }
      bool block = is_block(tag);
      int n = is_paragraph(tag) ? 2 : 1;
      if (block) tb.breaks(n);
      if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) {
        if (!tb.out.empty() && tb.out.back() != '\n') {
          tb.pending_space = false;
          tb.out.push_back('\t');
        }
      }
      bool child_pre = pre || tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_TEXTAREA || tag == GUMBO_TAG_LISTING;
      const GumboVector& kids = node->v.element.children;
      for (unsigned i = 0; i < kids.length; ++i) walk(static_cast<const GumboNode*>(kids.data[i]), tb, child_pre);
      if (block) tb.breaks(n);
      return;
    }
    case GUMBO_NODE_DOCUMENT: {
      const GumboVector& kids = node->v.document.children;
      for (unsigned i = 0; i < kids.length; ++i) walk(static_cast<const GumboNode*>(kids.data[i]), tb, pre);
      return;
    }
    case GUMBO_NODE_COMMENT:
      return;
  }
}

}  // namespace

std::string markup_to_text(std::string_view html) {
  GumboOptions opts = kGumboDefaultOptions;
  opts.max_errors = 0;  // parse errors are normal in scraped markup; do not collect them
  GumboOutput* doc = gumbo_parse_with_options(&opts, html.data(), html.size());
  TextBuilder tb;
  tb.out.reserve(html.size());
  walk(doc->document, tb, false);
  gumbo_destroy_output(&opts, doc);
  std::string& s = tb.out;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace dsft::data
