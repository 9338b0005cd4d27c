// The Jinja2 subset interpreter: lexer (trim_blocks, lstrip_blocks, {%- -%} whitespace control,
// as jinja2 3.1's lexer does it), recursive-descent parser with jinja2's operator precedence, and a
// tree-walking evaluator with Python value semantics. What it does not implement (macros,
// includes, call blocks, unknown filters/tests) is refused at parse time with the construct named.
#include <algorithm>
#include <clocale>
#include <cmath>
#include <cstring>
#include <ctime>
#include <cwctype>
#include <locale.h>
#include <set>
#include <unordered_map>

#include "dsft/util/error.h"
#include "text/jinja.h"

namespace dsft::text::jinja {

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

namespace {

enum class Tok { text, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  Tok type;
  std::string value;
  int line;
};

bool ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Python's str.rstrip() / lstrip() on whitespace, by code point.
std::string rstrip_ws(const std::string& s) { return py_strip(s, nullptr, false, true); }

// Length of the whitespace prefix of `s` from `pos` (Python's \s*), in bytes.
size_t ws_prefix(const std::string& s, size_t pos) {
  size_t i = pos;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (!py_isspace(c)) break;
      ++i;
      continue;
    }
    size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    std::u32string cp = utf8_decode(std::string_view(s).substr(i, len));
    if (cp.size() != 1 || !py_isspace(cp[0])) break;
    i += len;
  }
  return i - pos;
}

bool all_space(std::string_view s) {
  if (s.empty()) return false;
  for (char32_t c : utf8_decode(s))
    if (!py_isspace(c)) return false;
  return true;
}

// Python's unicode-escape decoding of a string literal's body, which is what jinja2 applies.
std::string unescape(const std::string& body, const std::string& tname, int line) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\' || i + 1 >= body.size()) {
      out += c;
      continue;
    }
    char e = body[++i];
    auto hex = [&](size_t n) -> char32_t {
      if (i + n >= body.size()) {  // needs body[i+1 .. i+n]
        throw Error("chat template '" + tname + "' line " + std::to_string(line) +
                    ": truncated \\x/\\u escape in a string literal");
      }
      char32_t v = 0;
      for (size_t k = 1; k <= n; ++k) {
        char h = body[i + k];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= h - '0';
        else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
        else
          throw Error("chat template '" + tname + "' line " + std::to_string(line) +
                      ": invalid hex digit in a \\x/\\u escape of a string literal");
      }
      i += n;
      return v;
    };
    switch (e) {
      case '\n': break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': out += utf8_encode(std::u32string(1, hex(2))); break;
      case 'u': out += utf8_encode(std::u32string(1, hex(4))); break;
      case 'U': out += utf8_encode(std::u32string(1, hex(8))); break;
      default:
        if (e >= '0' && e <= '7') {
          char32_t v = e - '0';
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            v = v * 8 + (body[++i] - '0');
          out += utf8_encode(std::u32string(1, v));
        } else {  // unknown escapes stay as written, as in Python
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(std::string src, const Options& opt, std::string tname) : opt_(opt), tname_(std::move(tname)) {
    // jinja2 normalises \r\n and \r to \n and drops one trailing newline (keep_trailing_newline off).
    src_.reserve(src.size());
    for (size_t i = 0; i < src.size(); ++i) {
      if (src[i] == '\r') {
        src_ += '\n';
        if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
      } else {
        src_ += src[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos <= n) {
      size_t t = find_tag(pos);
      std::string text = src_.substr(pos, (t == std::string::npos ? n : t) - pos);
      if (t == std::string::npos) {
        emit_text(text);
        break;
      }
      char kind = src_[t + 1];
      char mod = t + 2 < n ? src_[t + 2] : '\0';
      if (mod == '-') {
        text = rstrip_ws(text);
      } else if (mod != '+' && opt_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && all_space(std::string_view(text).substr(l_pos))) text.resize(l_pos);
      }
      emit_text(text);
      line_ += count_newlines(src_, pos, t);
      pos = t + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      if (kind == '#') {
        size_t end = src_.find("#}", pos);
        if (end == std::string::npos) fail("a comment '{#' is never closed with '#}'");
        line_ += count_newlines(src_, pos, end);
        char emod = end > pos ? src_[end - 1] : '\0';
        pos = end + 2;
        line_starting = after_tag_end(pos, emod, true);
        continue;
      }
      bool block = kind == '%';
      size_t first_tok = tokens_.size();
      tokens_.push_back({block ? Tok::block_begin : Tok::var_begin, "", line_});
      pos = lex_expr(pos, block);
      // {% raw %} ... {% endraw %}: the body is text, verbatim.
      if (block && tokens_.size() == first_tok + 3 && tokens_[first_tok + 1].type == Tok::name &&
          tokens_[first_tok + 1].value == "raw") {
        tokens_.resize(first_tok);
        pos = lex_raw(pos);
      }
      line_starting = last_end_newline_;
    }
    tokens_.push_back({Tok::eof, "", line_});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("chat template '" + tname_ + "' line " + std::to_string(line_) + ": " + what);
  }

  static int count_newlines(const std::string& s, size_t b, size_t e) {
    return static_cast<int>(std::count(s.begin() + static_cast<long>(b), s.begin() + static_cast<long>(e), '\n'));
  }

  size_t find_tag(size_t pos) const {
    while (true) {
      size_t t = src_.find('{', pos);
      if (t == std::string::npos || t + 1 >= src_.size()) return std::string::npos;
      char c = src_[t + 1];
      if (c == '{' || c == '%' || c == '#') return t;
      pos = t + 1;
    }
  }

  void emit_text(const std::string& text) {
    if (!text.empty()) tokens_.push_back({Tok::text, text, line_});
  }

  // Handles what follows a tag's closing delimiter at `pos` (just past it): `-` eats all
  // whitespace, trim_blocks eats one newline after block and comment tags. Returns whether the
  // consumed text ended a line (jinja2's line_starting, which gates lstrip_blocks).
  bool after_tag_end(size_t& pos, char mod, bool block_like) {
    if (mod == '-') {
      size_t w = ws_prefix(src_, pos);
      line_ += count_newlines(src_, pos, pos + w);
      pos += w;
      return w > 0 && src_[pos - 1] == '\n';
    }
    if (block_like && mod != '+' && opt_.trim_blocks && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
      ++line_;
      return true;
    }
    return false;
  }

  size_t lex_expr(size_t pos, bool block) {
    std::vector<char> balance;
    const size_t n = src_.size();
    while (true) {
      while (pos < n && ascii_space(src_[pos])) {
        if (src_[pos] == '\n') ++line_;
        ++pos;
      }
      if (pos >= n) fail(block ? "a block tag '{%' is never closed with '%}'" : "an expression '{{' is never closed with '}}'");
      if (balance.empty()) {
        const char* close = block ? "%}" : "}}";
        char mod = '\0';
        size_t len = 0;
        if ((src_[pos] == '-' || src_[pos] == '+') && src_.compare(pos + 1, 2, close) == 0) {
          mod = src_[pos];
          len = 3;
        } else if (src_.compare(pos, 2, close) == 0) {
          len = 2;
        }
        if (len) {
          tokens_.push_back({block ? Tok::block_end : Tok::var_end, "", line_});
          pos += len;
          last_end_newline_ = after_tag_end(pos, mod, block);
          return pos;
        }
      }
      char c = src_[pos];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t b = pos;
        while (pos < n && (std::isalnum(static_cast<unsigned char>(src_[pos])) || src_[pos] == '_')) ++pos;
        tokens_.push_back({Tok::name, src_.substr(b, pos - b), line_});
        continue;
      }
      if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = lex_number(pos);
        continue;
      }
      if (c == '\'' || c == '"') {
        size_t b = ++pos;
        while (pos < n && src_[pos] != c) {
          if (src_[pos] == '\\') ++pos;
          ++pos;
        }
        if (pos >= n) fail("a string literal is never closed");
        std::string body = src_.substr(b, pos - b);
        tokens_.push_back({Tok::string, unescape(body, tname_, line_), line_});
        line_ += count_newlines(src_, b, pos);
        ++pos;
        continue;
      }
      static const char* ops[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "*", "/", "%", "~", "<",
                                  ">",  "=",  ".",  ",",  ":",  "|",  "(", ")", "[", "]", "{", "}"};
      bool matched = false;
      for (const char* op : ops) {
        size_t len = std::strlen(op);
        if (src_.compare(pos, len, op) == 0) {
          if (len == 1 && (c == '(' || c == '[' || c == '{')) balance.push_back(c);
          if (len == 1 && (c == ')' || c == ']' || c == '}')) {
            char want = c == ')' ? '(' : c == ']' ? '[' : '{';
            if (balance.empty() || balance.back() != want) fail(std::string("unexpected '") + c + "'");
            balance.pop_back();
          }
          tokens_.push_back({Tok::op, op, line_});
          pos += len;
          matched = true;
          break;
        }
      }
      if (!matched) fail(std::string("unexpected character '") + c + "' in an expression");
    }
  }

  size_t lex_number(size_t pos) {
    const size_t n = src_.size();
    size_t b = pos;
    auto digits = [&] {
      while (pos < n && (std::isdigit(static_cast<unsigned char>(src_[pos])) || src_[pos] == '_')) ++pos;
    };
    digits();
    bool is_float = false;
    if (pos + 1 < n && src_[pos] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos + 1]))) {
      is_float = true;
      ++pos;
      digits();
    }
    if (pos < n && (src_[pos] == 'e' || src_[pos] == 'E')) {
      size_t save = pos++;
      if (pos < n && (src_[pos] == '+' || src_[pos] == '-')) ++pos;
      if (pos < n && std::isdigit(static_cast<unsigned char>(src_[pos]))) {
        is_float = true;
        digits();
      } else {
        pos = save;
      }
    }
    std::string text;
    for (size_t i = b; i < pos; ++i)
      if (src_[i] != '_') text += src_[i];
    tokens_.push_back({is_float ? Tok::floating : Tok::integer, text, line_});
    return pos;
  }

  size_t lex_raw(size_t pos) {
    size_t search = pos;
    while (true) {
      size_t t = src_.find("{%", search);
      if (t == std::string::npos) fail("'{% raw %}' is never closed with '{% endraw %}'");
      size_t p = t + 2;
      bool strip_before = p < src_.size() && src_[p] == '-';
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
      while (p < src_.size() && ascii_space(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") == 0) {
        size_t q = p + 6;
        while (q < src_.size() && ascii_space(src_[q])) ++q;
        char mod = '\0';
        if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) mod = src_[q++];
        if (src_.compare(q, 2, "%}") == 0) {
          std::string body = src_.substr(pos, t - pos);
          if (strip_before) body = rstrip_ws(body);
          emit_text(body);
          line_ += count_newlines(src_, pos, q);
          q += 2;
          last_end_newline_ = after_tag_end(q, mod, true);
          return q;
        }
      }
      search = t + 2;
    }
  }

  std::string src_;
  Options opt_;
  std::string tname_;
  std::vector<Token> tokens_;
  int line_ = 1;
  bool last_end_newline_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------------------------

struct Node {
  enum class K { literal, name, getattr, getitem, slice, call, filter, test, neg, pos, not_, and_, or_,
                 binop, compare, cond, list, tuple, dict, concat };
  K k;
  int line = 0;
  Value lit;
  std::string s;  // name, attribute, filter/test name, operator
  std::vector<std::unique_ptr<Node>> args;  // operands / positional arguments / elements
  std::vector<std::pair<std::string, std::unique_ptr<Node>>> kwargs;
  std::vector<std::string> ops;  // comparison operators, one per args[i+1]
  bool negated = false;          // "is not"
};
using NodeP = std::unique_ptr<Node>;

struct Stmt {
  enum class K { text, output, if_, for_, set, set_block, break_, continue_ };
  K k;
  int line = 0;
  std::string text;
  NodeP expr;  // output / set value / for iterable
  NodeP filter;  // for ... if <filter>
  std::vector<std::pair<NodeP, std::vector<std::unique_ptr<Stmt>>>> branches;  // if / elif
  std::vector<std::unique_ptr<Stmt>> body, else_body;
  std::vector<std::string> targets;
  std::string attr;  // set ns.attr
};
using StmtP = std::unique_ptr<Stmt>;

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

namespace {

const std::set<std::string> kFilters = {
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent",
    "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr",
    "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title",
    "tojson", "trim", "unique", "upper", "wordcount"};
const std::set<std::string> kTests = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "float",
    "ge", "greaterthan", "gt", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping",
    "ne", "none", "number", "odd", "sameas", "sequence", "string", "true", "undefined", "upper",
    "==", "!=", "<", "<=", ">", ">="};

class Parser {
 public:
  Parser(std::vector<Token> toks, std::string tname) : t_(std::move(toks)), tname_(std::move(tname)) {}

  std::vector<StmtP> parse_template() {
    std::string end;
    auto body = parse_body({}, end);
    return body;
  }

 private:
  [[noreturn]] void fail(const std::string& what, int line = -1) const {
    throw Error("chat template '" + tname_ + "' line " + std::to_string(line < 0 ? cur().line : line) + ": " + what);
  }
  [[noreturn]] void unsupported(const std::string& construct) const {
    fail("uses " + construct + ", which dsft's template engine does not support (supported: if/elif/else, "
         "for with loop.* and break/continue, set incl. namespace attributes, raw; see docs/chat-templates.md)");
  }

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Tok::op && cur().value == op; }
  bool is_name(const char* n) const { return cur().type == Tok::name && cur().value == n; }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++i_;
    return true;
  }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    ++i_;
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(std::string("expected '") + op + "', found " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != Tok::name) fail("expected a name, found " + describe(cur()));
    return t_[i_++].value;
  }
  void expect_block_end() {
    if (cur().type != Tok::block_end) fail("expected '%}', found " + describe(cur()));
    ++i_;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::eof: return "the end of the template";
      case Tok::block_end: return "'%}'";
      case Tok::var_end: return "'}}'";
      case Tok::string: return "a string";
      case Tok::text: return "text";
      default: return "'" + t.value + "'";
    }
  }

  NodeP node(Node::K k) {
    auto n = std::make_unique<Node>();
    n->k = k;
    n->line = cur().line;
    return n;
  }

  // Parses statements until a block tag whose name is in `ends`; leaves that tag's name in `end`
  // and the stream positioned after the name.
  std::vector<StmtP> parse_body(const std::set<std::string>& ends, std::string& end) {
    std::vector<StmtP> out;
    while (true) {
      const Token& tk = cur();
      if (tk.type == Tok::eof) {
        if (!ends.empty()) fail("the template ends inside a block; expected one of: " + join(ends));
        return out;
      }
      if (tk.type == Tok::text) {
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::text;
        s->line = tk.line;
        s->text = tk.value;
        out.push_back(std::move(s));
        ++i_;
        continue;
      }
      if (tk.type == Tok::var_begin) {
        ++i_;
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::output;
        s->line = tk.line;
        s->expr = parse_tuple_expr();
        if (cur().type != Tok::var_end) fail("expected '}}', found " + describe(cur()));
        ++i_;
        out.push_back(std::move(s));
        continue;
      }
      if (tk.type != Tok::block_begin) fail("unexpected " + describe(tk));
      ++i_;
      std::string name = expect_name();
      if (ends.count(name)) {
        end = name;
        return out;
      }
      out.push_back(parse_statement(name));
    }
  }

  static std::string join(const std::set<std::string>& s) {
    std::string o;
    for (const auto& e : s) o += (o.empty() ? "" : ", ") + e;
    return o;
  }

  StmtP parse_statement(const std::string& name) {
    auto s = std::make_unique<Stmt>();
    s->line = t_[i_ - 1].line;
    if (name == "if") {
      s->k = Stmt::K::if_;
      std::string end = "elif";
      while (end == "elif") {
        NodeP cond = parse_expression();
        expect_block_end();
        auto body = parse_body({"elif", "else", "endif"}, end);
        s->branches.emplace_back(std::move(cond), std::move(body));
      }
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endif"}, end);
      }
      expect_block_end();
      return s;
    }
    if (name == "for") {
      s->k = Stmt::K::for_;
      s->targets.push_back(expect_name());
      while (accept_op(",")) s->targets.push_back(expect_name());
      if (!accept_name("in")) fail("expected 'in' in a for loop, found " + describe(cur()));
      s->expr = parse_or_tuple();
      if (accept_name("if")) s->filter = parse_expression();
      if (is_name("recursive")) unsupported("a recursive for loop");
      expect_block_end();
      ++loop_depth_;
      std::string end;
      s->body = parse_body({"else", "endfor"}, end);
      --loop_depth_;
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"}, end);
      }
      expect_block_end();
      return s;
    }
    if (name == "set") {
      s->targets.push_back(expect_name());
      if (accept_op(".")) {
        s->attr = expect_name();
      } else {
        while (accept_op(",")) s->targets.push_back(expect_name());
      }
      if (accept_op("=")) {
        s->k = Stmt::K::set;
        s->expr = parse_tuple_expr();
        expect_block_end();
        return s;
      }
      if (!s->attr.empty() || s->targets.size() != 1) fail("a block '{% set %}' assigns exactly one name");
      if (is_op("|")) unsupported("a filtered block '{% set x | filter %}'");
      expect_block_end();
      s->k = Stmt::K::set_block;
      std::string end;
      s->body = parse_body({"endset"}, end);
      expect_block_end();
      return s;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail("'{% " + name + " %}' outside a for loop");
      s->k = name == "break" ? Stmt::K::break_ : Stmt::K::continue_;
      expect_block_end();
      return s;
    }
    static const std::set<std::string> known_unsupported = {
        "macro", "call", "filter", "include", "import", "from", "extends", "block", "with",
        "autoescape", "do", "trans"};
    if (known_unsupported.count(name)) unsupported("'{% " + name + " %}'");
    fail("unknown or misplaced tag '{% " + name + " %}'");
  }

  // An expression, or an unparenthesised tuple "a, b" (as {{ }} and set accept).
  NodeP parse_tuple_expr() {
    NodeP first = parse_expression();
    if (!is_op(",")) return first;
    auto t = node(Node::K::tuple);
    t->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (cur().type == Tok::block_end || cur().type == Tok::var_end) break;
      t->args.push_back(parse_expression());
    }
    return t;
  }

  // The iterable of a for loop: no conditional expression (the `if` there is the loop filter).
  NodeP parse_or_tuple() {
    NodeP first = parse_or();
    if (!is_op(",")) return first;
    auto t = node(Node::K::tuple);
    t->args.push_back(std::move(first));
    while (accept_op(",")) t->args.push_back(parse_or());
    return t;
  }

  NodeP parse_expression() {
    NodeP e = parse_or();
    while (is_name("if")) {
      auto c = node(Node::K::cond);
      ++i_;
      NodeP test = parse_or();
      NodeP other;
      if (accept_name("else")) other = parse_expression();
      c->args.push_back(std::move(test));
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  NodeP parse_or() {
    NodeP l = parse_and();
    while (is_name("or")) {
      auto n = node(Node::K::or_);
      ++i_;
      n->args.push_back(std::move(l));
      n->args.push_back(parse_and());
      l = std::move(n);
    }
    return l;
  }

  NodeP parse_and() {
    NodeP l = parse_not();
    while (is_name("and")) {
      auto n = node(Node::K::and_);
      ++i_;
      n->args.push_back(std::move(l));
      n->args.push_back(parse_not());
      l = std::move(n);
    }
    return l;
  }

  NodeP parse_not() {
    if (is_name("not")) {
      auto n = node(Node::K::not_);
      ++i_;
      n->args.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }

  NodeP parse_compare() {
    NodeP first = parse_math1();
    NodeP cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::op &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" || cur().value == "<=" ||
           cur().value == ">" || cur().value == ">=")) {
        op = cur().value;
        ++i_;
      } else if (is_name("in")) {
        op = "in";
        ++i_;
      } else if (is_name("not") && peek().type == Tok::name && peek().value == "in") {
        op = "notin";
        i_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Node::K::compare);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  NodeP binop(const std::string& op, NodeP l, NodeP r) {
    auto n = node(Node::K::binop);
    n->s = op;
    n->args.push_back(std::move(l));
    n->args.push_back(std::move(r));
    return n;
  }

  NodeP parse_math1() {
    NodeP l = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = t_[i_++].value;
      l = binop(op, std::move(l), parse_concat());
    }
    return l;
  }

  NodeP parse_concat() {
    NodeP l = parse_math2();
    if (!is_op("~")) return l;
    auto n = node(Node::K::concat);
    n->args.push_back(std::move(l));
    while (accept_op("~")) n->args.push_back(parse_math2());
    return n;
  }

  NodeP parse_math2() {
    NodeP l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = t_[i_++].value;
      l = binop(op, std::move(l), parse_pow());
    }
    return l;
  }

  NodeP parse_pow() {
    NodeP l = parse_unary(true);
    while (accept_op("**")) l = binop("**", std::move(l), parse_unary(true));
    return l;
  }

  NodeP parse_unary(bool with_filter) {
    NodeP n;
    if (is_op("-") || is_op("+")) {
      n = node(is_op("-") ? Node::K::neg : Node::K::pos);
      ++i_;
      n->args.push_back(parse_unary(false));
    } else {
      n = parse_primary();
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  NodeP parse_primary() {
    const Token& tk = cur();
    if (tk.type == Tok::name) {
      auto n = node(Node::K::literal);
      const std::string& v = tk.value;
      if (v == "true" || v == "True") n->lit = Value::boolean(true);
      else if (v == "false" || v == "False") n->lit = Value::boolean(false);
      else if (v == "none" || v == "None") n->lit = Value::none();
      else {
        n->k = Node::K::name;
        n->s = v;
      }
      ++i_;
      return n;
    }
    if (tk.type == Tok::string) {
      auto n = node(Node::K::literal);
      std::string s;
      while (cur().type == Tok::string) s += t_[i_++].value;  // adjacent literals concatenate
      n->lit = Value::string(std::move(s));
      return n;
    }
    if (tk.type == Tok::integer) {
      auto n = node(Node::K::literal);
      errno = 0;
      long long v = std::strtoll(tk.value.c_str(), nullptr, 10);
      if (errno == ERANGE) fail("integer literal " + tk.value + " is out of range");
      n->lit = Value::integer(v);
      ++i_;
      return n;
    }
    if (tk.type == Tok::floating) {
      auto n = node(Node::K::literal);
      n->lit = Value::floating(std::strtod(tk.value.c_str(), nullptr));
      ++i_;
      return n;
    }
    if (accept_op("(")) {
      if (accept_op(")")) {
        auto t = node(Node::K::tuple);
        return t;
      }
      NodeP e = parse_expression();
      if (is_op(",")) {
        auto t = node(Node::K::tuple);
        t->args.push_back(std::move(e));
        while (accept_op(",")) {
          if (is_op(")")) break;
          t->args.push_back(parse_expression());
        }
        e = std::move(t);
      }
      expect_op(")");
      return e;
    }
    if (accept_op("[")) {
      auto l = node(Node::K::list);
      while (!is_op("]")) {
        l->args.push_back(parse_expression());
        if (!accept_op(",")) break;
      }
      expect_op("]");
      return l;
    }
    if (accept_op("{")) {
      auto d = node(Node::K::dict);
      while (!is_op("}")) {
        d->args.push_back(parse_expression());
        expect_op(":");
        d->args.push_back(parse_expression());
        if (!accept_op(",")) break;
      }
      expect_op("}");
      return d;
    }
    fail("unexpected " + describe(tk) + " in an expression");
  }

  NodeP parse_postfix(NodeP n) {
    while (true) {
      if (is_op(".")) {
        ++i_;
        if (cur().type == Tok::integer) {
          auto g = node(Node::K::getitem);
          auto idx = node(Node::K::literal);
          idx->lit = Value::integer(std::strtoll(cur().value.c_str(), nullptr, 10));
          ++i_;
          g->args.push_back(std::move(n));
          g->args.push_back(std::move(idx));
          n = std::move(g);
          continue;
        }
        auto g = node(Node::K::getattr);
        g->s = expect_name();
        g->args.push_back(std::move(n));
        n = std::move(g);
      } else if (is_op("[")) {
        ++i_;
        n = parse_subscript(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  NodeP parse_subscript(NodeP obj) {
    NodeP start, stop, step;
    bool is_slice = false;
    if (!is_op(":")) start = parse_expression();
    if (accept_op(":")) {
      is_slice = true;
      if (!is_op("]") && !is_op(":")) stop = parse_expression();
      if (accept_op(":"))
        if (!is_op("]")) step = parse_expression();
    }
    expect_op("]");
    if (!is_slice) {
      auto g = node(Node::K::getitem);
      g->args.push_back(std::move(obj));
      g->args.push_back(std::move(start));
      return g;
    }
    auto s = node(Node::K::slice);
    s->args.push_back(std::move(obj));
    s->args.push_back(std::move(start));
    s->args.push_back(std::move(stop));
    s->args.push_back(std::move(step));
    return s;
  }

  void parse_args(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) unsupported("*args / **kwargs in a call");
      if (cur().type == Tok::name && peek().type == Tok::op && peek().value == "=") {
        std::string key = t_[i_].value;
        i_ += 2;
        n.kwargs.emplace_back(key, parse_expression());
      } else {
        if (!n.kwargs.empty()) fail("a positional argument follows a keyword argument");
        n.args.push_back(parse_expression());
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
  }

  NodeP parse_call(NodeP callee) {
    auto c = node(Node::K::call);
    c->args.push_back(std::move(callee));
    parse_args(*c);
    return c;
  }

  NodeP parse_filter_expr(NodeP n) {
    while (true) {
      if (is_op("|")) {
        ++i_;
        auto f = node(Node::K::filter);
        f->s = expect_name();
        while (accept_op(".")) f->s += "." + expect_name();
        if (!kFilters.count(f->s)) unsupported("the filter '" + f->s + "'");
        f->args.push_back(std::move(n));
        if (is_op("(")) parse_args(*f);
        n = std::move(f);
      } else if (is_name("is")) {
        ++i_;
        auto t = node(Node::K::test);
        t->negated = accept_name("not");
        if (cur().type == Tok::name) {
          t->s = t_[i_++].value;
        } else if (cur().type == Tok::op && kTests.count(cur().value)) {
          t->s = t_[i_++].value;
        } else {
          fail("expected a test name after 'is', found " + describe(cur()));
        }
        if (!kTests.count(t->s)) unsupported("the test 'is " + t->s + "'");
        t->args.push_back(std::move(n));
        if (is_op("(")) {
          parse_args(*t);
        } else if ((cur().type == Tok::name || cur().type == Tok::string || cur().type == Tok::integer ||
                    cur().type == Tok::floating || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) fail("tests cannot be chained with 'is'");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        n = std::move(t);
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  std::vector<Token> t_;
  std::string tname_;
  size_t i_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Evaluator
// ---------------------------------------------------------------------------------------------

namespace {

struct Frame {
  std::unordered_map<std::string, Value> vars;
  const Frame* parent = nullptr;

  const Value* find(const std::string& name) const {
    for (const Frame* f = this; f; f = f->parent) {
      auto it = f->vars.find(name);
      if (it != f->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class Flow { normal, break_, continue_ };

[[noreturn]] void type_error(const std::string& what) { throw Error(what); }

std::string describe_undefined(const Value& v) {
  return v.str().empty() ? std::string("a value is undefined") : "'" + v.str() + "' is undefined";
}

void check_overflow(bool overflow) {
  if (overflow) type_error("integer overflow in template arithmetic");
}

// Python's list/str index normalisation; returns false when out of range.
bool norm_index(int64_t& i, size_t size) {
  if (i < 0) i += static_cast<int64_t>(size);
  return i >= 0 && i < static_cast<int64_t>(size);
}

std::vector<int64_t> slice_indices(size_t size, const Value& start, const Value& stop, const Value& step) {
  int64_t st = step.is_undefined() || step.is_none() ? 1 : step.as_int();
  if (st == 0) type_error("slice step cannot be zero");
  const int64_t n = static_cast<int64_t>(size);
  auto clamp = [&](const Value& v, int64_t dflt, bool is_start) {
    if (v.is_undefined() || v.is_none()) return dflt;
    if (!v.is_int() && !v.is_bool()) type_error("slice indices must be integers, got " + v.type_name());
    int64_t x = v.as_int();
    if (x < 0) x += n;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    (void)is_start;
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  int64_t b = clamp(start, st > 0 ? 0 : n - 1, true);
  int64_t e = clamp(stop, st > 0 ? n : -1, false);
  std::vector<int64_t> idx;
  if (st > 0)
    for (int64_t i = b; i < e; i += st) idx.push_back(i);
  else
    for (int64_t i = b; i > e; i += st) idx.push_back(i);
  return idx;
}

// Elements a for loop (or list()/join...) iterates over.
List iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined:
      return {};
    case Value::Kind::list:
      return v.items();
    case Value::Kind::dict: {
      if (v.is_namespace()) type_error("a namespace object is not iterable");
      List keys;
      for (const auto& e : v.dict_ref().entries) keys.push_back(Value::string(e.first));
      return keys;
    }
    case Value::Kind::string: {
      List chars;
      for (char32_t c : utf8_decode(v.str())) chars.push_back(Value::string(utf8_encode(std::u32string(1, c))));
      return chars;
    }
    default:
      type_error("'" + v.type_name() + "' object is not iterable");
  }
}

int compare_values(const Value& a, const Value& b, const std::string& op) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_double(), y = b.as_double();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.str().compare(b.str()) < 0 ? -1 : a.str() == b.str() ? 0 : 1;
  if (a.is_list() && b.is_list()) {
    const auto &x = a.items(), &y = b.items();
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      if (equals(x[i], y[i])) continue;
      return compare_values(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  type_error("'" + op + "' is not supported between '" + a.type_name() + "' and '" + b.type_name() + "'");
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::string:
      if (!item.is_string())
        type_error("'in <string>' requires a string on the left, got " + item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::list:
      for (const auto& e : container.items())
        if (equals(e, item)) return true;
      return false;
    case Value::Kind::dict:
      if (container.is_namespace()) type_error("'in' cannot look inside a namespace object");
      return item.is_string() && container.dict_ref().find(item.str()) != nullptr;
    case Value::Kind::undefined:
      return false;
    default:
      type_error("argument of type '" + container.type_name() + "' is not iterable");
  }
}

locale_t utf8_locale() {
  static locale_t loc = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
    return l;
  }();
  return loc;
}

std::string map_case(const std::string& s, int mode) {  // 0 lower, 1 upper
  std::u32string u = utf8_decode(s);
  locale_t loc = utf8_locale();
  for (char32_t& c : u) {
    if (c < 0x80) {
      c = static_cast<char32_t>(mode ? std::toupper(static_cast<int>(c)) : std::tolower(static_cast<int>(c)));
    } else if (loc) {
      c = static_cast<char32_t>(mode ? towupper_l(static_cast<wint_t>(c), loc) : towlower_l(static_cast<wint_t>(c), loc));
    }
  }
  return utf8_encode(u);
}

std::string capitalize(const std::string& s) {
  std::string lower = map_case(s, 0);
  std::u32string u = utf8_decode(lower);
  if (!u.empty()) u[0] = utf8_decode(map_case(utf8_encode(std::u32string(1, u[0])), 1))[0];
  return utf8_encode(u);
}

std::string title(const std::string& s) {
  std::u32string u = utf8_decode(s);
  bool prev_cased = false;
  for (char32_t& c : u) {
    std::string one = utf8_encode(std::u32string(1, c));
    std::string up = map_case(one, 1), lo = map_case(one, 0);
    bool cased = up != lo;
    c = utf8_decode(prev_cased ? lo : up)[0];
    prev_cased = cased;
  }
  return utf8_encode(u);
}

const Value* kwarg(const Kwargs& kw, const char* name) {
  for (const auto& [k, v] : kw)
    if (k == name) return &v;
  return nullptr;
}

// Positional argument i, else keyword `name`, else nullptr.
const Value* arg(const List& args, const Kwargs& kw, size_t i, const char* name) {
  if (i < args.size()) return &args[i];
  return kwarg(kw, name);
}

const std::string& want_string(const Value& v, const std::string& what) {
  if (!v.is_string()) type_error(what + " expects a string, got " + v.type_name());
  return v.str();
}

std::vector<std::string> py_split(const std::string& s, const Value* sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (!sep || sep->is_none()) {
    std::u32string u = utf8_decode(s);
    size_t i = 0;
    while (true) {
      while (i < u.size() && py_isspace(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = u.size();
        while (e > i && py_isspace(u[e - 1])) --e;
        out.push_back(utf8_encode(u.substr(i, e - i)));
        break;
      }
      size_t b = i;
      while (i < u.size() && !py_isspace(u[i])) ++i;
      out.push_back(utf8_encode(u.substr(b, i - b)));
    }
    return out;
  }
  const std::string& d = want_string(*sep, "split()");
  if (d.empty()) type_error("split() was given an empty separator");
  size_t pos = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
    size_t f = s.find(d, pos);
    if (f == std::string::npos) break;
    out.push_back(s.substr(pos, f - pos));
    pos = f + d.size();
  }
  out.push_back(s.substr(pos));
  return out;
}

Value string_list(const std::vector<std::string>& v) {
  List l;
  for (const auto& s : v) l.push_back(Value::string(s));
  return Value::list(std::move(l));
}

// The str / dict / list methods a sandboxed template may call.
Value call_method(const Value& self, const std::string& name, const List& args, const Kwargs& kw) {
  if (self.is_string()) {
    const std::string& s = self.str();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* c = arg(args, kw, 0, "chars");
      std::string chars;
      if (c && !c->is_none()) chars = want_string(*c, name + "()");
      bool has = c && !c->is_none();
      return Value::string(py_strip(s, has ? &chars : nullptr, name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = arg(args, kw, 0, "sep");
      const Value* mx = arg(args, kw, 1, "maxsplit");
      int64_t maxsplit = mx ? mx->as_int() : -1;
      if (name == "rsplit" && maxsplit >= 0) {
        // rsplit with a limit: split everything, then re-join the leading parts.
        auto parts = py_split(s, sep, -1);
        if (static_cast<int64_t>(parts.size()) <= maxsplit + 1) return string_list(parts);
        if (!sep || sep->is_none())
          type_error("rsplit() with a limit and no separator is not supported by dsft's template engine");
        size_t keep = parts.size() - static_cast<size_t>(maxsplit);
        std::string head;
        for (size_t i = 0; i < keep; ++i) head += (i ? sep->str() : "") + parts[i];
        std::vector<std::string> out{head};
        out.insert(out.end(), parts.begin() + static_cast<long>(keep), parts.end());
        return string_list(out);
      }
      return string_list(py_split(s, sep, maxsplit));
    }
    if (name == "startswith" || name == "endswith") {
      if (args.empty()) type_error(name + "() takes one argument");
      List cands = args[0].is_list() ? args[0].items() : List{args[0]};
      for (const auto& c : cands) {
        const std::string& p = want_string(c, name + "()");
        if (p.size() > s.size()) continue;
        if (name == "startswith" ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0)
          return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "replace") {
      if (args.size() < 2) type_error("replace() takes two arguments");
      const std::string& from = want_string(args[0], "replace()");
      const std::string& to = want_string(args[1], "replace()");
      int64_t count = args.size() > 2 ? args[2].as_int() : -1;
      std::string out;
      if (from.empty()) {  // Python inserts `to` between every character
        std::u32string u = utf8_decode(s);
        int64_t done = 0;
        for (size_t i = 0; i <= u.size(); ++i) {
          if (count < 0 || done < count) {
            out += to;
            ++done;
          }
          if (i < u.size()) out += utf8_encode(std::u32string(1, u[i]));
        }
        return Value::string(out);
      }
      size_t pos = 0;
      int64_t done = 0;
      while (count < 0 || done < count) {
        size_t f = s.find(from, pos);
        if (f == std::string::npos) break;
        out += s.substr(pos, f - pos) + to;
        pos = f + from.size();
        ++done;
      }
      out += s.substr(pos);
      return Value::string(out);
    }
    if (name == "upper") return Value::string(map_case(s, 1));
    if (name == "lower") return Value::string(map_case(s, 0));
    if (name == "capitalize") return Value::string(capitalize(s));
    if (name == "title") return Value::string(title(s));
    if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
      if (args.empty()) type_error(name + "() takes one argument");
      const std::string& sub = want_string(args[0], name + "()");
      if (name == "count") {
        if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_decode(s).size()) + 1);
        int64_t c = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++c;
        return Value::integer(c);
      }
      size_t f = (name == "find" || name == "index") ? s.find(sub) : s.rfind(sub);
      if (f == std::string::npos) {
        if (name == "index" || name == "rindex") type_error("substring not found by " + name + "()");
        return Value::integer(-1);
      }
      return Value::integer(static_cast<int64_t>(utf8_decode(std::string_view(s).substr(0, f)).size()));
    }
    if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "islower" ||
        name == "isupper") {
      std::u32string u = utf8_decode(s);
      if (u.empty()) return Value::boolean(false);
      if (name == "islower" || name == "isupper") {
        bool cased = map_case(s, 0) != map_case(s, 1);
        return Value::boolean(cased && (name == "islower" ? map_case(s, 0) == s : map_case(s, 1) == s));
      }
      for (char32_t c : u) {
        bool ok = name == "isspace" ? py_isspace(c)
                  : name == "isdigit" ? (c >= '0' && c <= '9')
                  : name == "isalpha" ? (c < 0x80 ? std::isalpha(static_cast<int>(c)) != 0 : map_case(utf8_encode(std::u32string(1, c)), 0) != map_case(utf8_encode(std::u32string(1, c)), 1))
                  : (c < 0x80 ? std::isalnum(static_cast<int>(c)) != 0 : false);
        if (!ok) return Value::boolean(false);
      }
      return Value::boolean(true);
    }
    if (name == "splitlines") {
      std::vector<std::string> out;
      size_t b = 0;
      for (size_t i = 0; i < s.size(); ++i)
        if (s[i] == '\n') {
          out.push_back(s.substr(b, i - b));
          b = i + 1;
        }
      if (b < s.size()) out.push_back(s.substr(b));
      return string_list(out);
    }
    if (name == "join") {
      if (args.empty()) type_error("join() takes one argument");
      std::string out;
      bool first = true;
      for (const auto& e : iterate(args[0])) {
        if (!first) out += s;
        first = false;
        out += want_string(e, "str.join()");
      }
      return Value::string(out);
    }
  }
  if (self.is_dict() && !self.is_namespace()) {
    const Dict& d = self.dict_ref();
    if (name == "items") {
      List l;
      for (const auto& [k, v] : d.entries) l.push_back(Value::list({Value::string(k), v}, true));
      return Value::list(std::move(l));
    }
    if (name == "keys" || name == "values") {
      List l;
      for (const auto& [k, v] : d.entries) l.push_back(name == "keys" ? Value::string(k) : v);
      return Value::list(std::move(l));
    }
    if (name == "get") {
      if (args.empty()) type_error("get() takes a key");
      const Value* dflt = args.size() > 1 ? &args[1] : nullptr;
      if (args[0].is_string())
        if (const Value* v = d.find(args[0].str())) return *v;
      return dflt ? *dflt : Value::none();
    }
  }
  if (self.is_list()) {
    if (name == "index" || name == "count") {
      if (args.empty()) type_error(name + "() takes one argument");
      int64_t c = 0;
      const List& l = self.items();
      for (size_t i = 0; i < l.size(); ++i)
        if (equals(l[i], args[0])) {
          if (name == "index") return Value::integer(static_cast<int64_t>(i));
          ++c;
        }
      if (name == "index") type_error("list.index(): the value is not in the list");
      return Value::integer(c);
    }
  }
  type_error("'" + self.type_name() + "' object has no method '" + name + "' in dsft's template engine");
}

bool has_method(const Value& self, const std::string& name) {
  static const std::set<std::string> str_methods = {
      "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "replace", "upper", "lower",
      "capitalize", "title", "find", "rfind", "index", "rindex", "count", "isdigit", "isspace", "isalpha",
      "isalnum", "islower", "isupper", "splitlines", "join"};
  static const std::set<std::string> dict_methods = {"items", "keys", "values", "get"};
  static const std::set<std::string> list_methods = {"index", "count"};
  if (self.is_string()) return str_methods.count(name) > 0;
  if (self.is_dict() && !self.is_namespace()) return dict_methods.count(name) > 0;
  if (self.is_list()) return list_methods.count(name) > 0;
  return false;
}

Value bound_method(const Value& self, const std::string& name) {
  return Value::callable(self.type_name() + "." + name,
                         [self, name](const List& a, const Kwargs& k) { return call_method(self, name, a, k); });
}

// obj.attr: Python attribute first (methods), then item (jinja2's getattr).
Value get_attr(const Value& obj, const std::string& attr) {
  if (obj.is_undefined()) type_error(describe_undefined(obj) + " (while reading ." + attr + ")");
  if (has_method(obj, attr)) return bound_method(obj, attr);
  if (obj.is_dict())
    if (const Value* v = obj.dict_ref().find(attr)) return *v;
  return Value::undefined(attr);
}

// obj[key]: item first, then attribute for string keys (jinja2's getitem).
Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) type_error(describe_undefined(obj) + " (while reading an item)");
  if (obj.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = obj.dict_ref().find(key.str())) return *v;
      if (has_method(obj, key.str())) return bound_method(obj, key.str());
      return Value::undefined(key.str());
    }
    return Value::undefined();
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      if (!norm_index(i, obj.items().size())) return Value::undefined();
      return obj.items()[static_cast<size_t>(i)];
    }
    std::u32string u = utf8_decode(obj.str());
    if (!norm_index(i, u.size())) return Value::undefined();
    return Value::string(utf8_encode(std::u32string(1, u[static_cast<size_t>(i)])));
  }
  if (key.is_string() && has_method(obj, key.str())) return bound_method(obj, key.str());
  return Value::undefined();
}

Value arith(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined())
    type_error(describe_undefined(a.is_undefined() ? a : b) + " (used with '" + op + "')");
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value::string(a.str() + b.str());
    if (a.is_list() && b.is_list()) {
      List l = a.items();
      l.insert(l.end(), b.items().begin(), b.items().end());
      return Value::list(std::move(l), a.is_tuple() && b.is_tuple());
    }
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_list() ? &a : b.is_string() || b.is_list() ? &b : nullptr;
    const Value* cnt = seq == &a ? &b : &a;
    if (seq && (cnt->is_int() || cnt->is_bool())) {
      int64_t n = std::max<int64_t>(0, cnt->as_int());
      if (seq->is_string()) {
        std::string out;
        for (int64_t i = 0; i < n; ++i) out += seq->str();
        return Value::string(out);
      }
      List out;
      for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq->items().begin(), seq->items().end());
      return Value::list(std::move(out));
    }
  }
  if (!a.is_number() || !b.is_number()) {
    if (op == "%" && a.is_string())
      type_error("printf-style string formatting ('%') is not supported by dsft's template engine");
    type_error("unsupported operand types for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
  }
  bool fl = a.is_float() || b.is_float();
  if (op == "/") {
    if (b.as_double() == 0) type_error("division by zero");
    return Value::floating(a.as_double() / b.as_double());
  }
  if (fl) {
    double x = a.as_double(), y = b.as_double();
    if (op == "+") return Value::floating(x + y);
    if (op == "-") return Value::floating(x - y);
    if (op == "*") return Value::floating(x * y);
    if (op == "**") return Value::floating(std::pow(x, y));
    if (y == 0) type_error("division by zero");
    if (op == "//") return Value::floating(std::floor(x / y));
    if (op == "%") {
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value::floating(m);
    }
  }
  int64_t x = a.as_int(), y = b.as_int(), r = 0;
  if (op == "+") {
    check_overflow(__builtin_add_overflow(x, y, &r));
    return Value::integer(r);
  }
  if (op == "-") {
    check_overflow(__builtin_sub_overflow(x, y, &r));
    return Value::integer(r);
  }
  if (op == "*") {
    check_overflow(__builtin_mul_overflow(x, y, &r));
    return Value::integer(r);
  }
  if (op == "**") {
    if (y < 0) return Value::floating(std::pow(static_cast<double>(x), static_cast<double>(y)));
    int64_t acc = 1;
    for (int64_t i = 0; i < y; ++i) {
      check_overflow(__builtin_mul_overflow(acc, x, &acc));
    }
    return Value::integer(acc);
  }
  if (y == 0) type_error("integer division or modulo by zero");
  int64_t q = x / y, m = x % y;
  if (m != 0 && ((m < 0) != (y < 0))) {
    --q;
    m += y;
  }
  if (op == "//") return Value::integer(q);
  return Value::integer(m);
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&#34;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

class Renderer {
 public:
  Renderer(const std::string& tname, const std::map<std::string, Value>& vars) : tname_(tname) {
    for (const auto& [k, v] : vars) globals_.vars[k] = v;
    install_builtins();
  }

  std::string run(const std::vector<StmtP>& body) {
    Frame root;
    root.parent = &globals_;
    std::string out;
    try {
      exec(body, root, out);
    } catch (const Error& e) {
      throw Error("chat template '" + tname_ + "' line " + std::to_string(line_) + ": " + e.what());
    }
    return out;
  }

 private:
  void install_builtins() {
    auto set_builtin = [&](const std::string& name, std::function<Value(const List&, const Kwargs&)> fn) {
      if (!globals_.vars.count(name)) globals_.vars[name] = Value::callable(name, std::move(fn));
    };
    set_builtin("namespace", [](const List& args, const Kwargs& kw) {
      auto d = std::make_shared<Dict>();
      d->is_namespace = true;
      for (const auto& a : args) {
        if (!a.is_dict()) type_error("namespace() takes keyword arguments or a dict");
        for (const auto& [k, v] : a.dict_ref().entries) d->set(k, v);
      }
      for (const auto& [k, v] : kw) d->set(k, v);
      return Value::dict(d);
    });
    set_builtin("dict", [](const List& args, const Kwargs& kw) {
      auto d = std::make_shared<Dict>();
      for (const auto& a : args) {
        if (!a.is_dict()) type_error("dict() takes keyword arguments or a dict");
        for (const auto& [k, v] : a.dict_ref().entries) d->set(k, v);
      }
      for (const auto& [k, v] : kw) d->set(k, v);
      return Value::dict(d);
    });
    set_builtin("range", [](const List& args, const Kwargs&) {
      int64_t start = 0, stop = 0, step = 1;
      for (const auto& a : args)
        if (!a.is_int() && !a.is_bool()) type_error("range() takes integers, got " + a.type_name());
      if (args.size() == 1) stop = args[0].as_int();
      else if (args.size() >= 2) {
        start = args[0].as_int();
        stop = args[1].as_int();
        if (args.size() > 2) step = args[2].as_int();
      } else {
        type_error("range() takes 1 to 3 arguments");
      }
      if (step == 0) type_error("range() step cannot be zero");
      List l;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        l.push_back(Value::integer(i));
        if (l.size() > 10'000'000) type_error("range() is too long for a chat template");
      }
      return Value::list(std::move(l));
    });
  }

  Flow exec(const std::vector<StmtP>& body, Frame& frame, std::string& out) {
    for (const auto& s : body) {
      line_ = s->line;
      switch (s->k) {
        case Stmt::K::text:
          out += s->text;
          break;
        case Stmt::K::output:
          out += eval(*s->expr, frame).to_output();
          break;
        case Stmt::K::if_: {
          bool taken = false;
          for (const auto& [cond, branch] : s->branches) {
            if (eval(*cond, frame).truthy()) {
              taken = true;
              Flow f = exec(branch, frame, out);
              if (f != Flow::normal) return f;
              break;
            }
          }
          if (!taken) {
            Flow f = exec(s->else_body, frame, out);
            if (f != Flow::normal) return f;
          }
          break;
        }
        case Stmt::K::for_:
          exec_for(*s, frame, out);
          break;
        case Stmt::K::set: {
          Value v = eval(*s->expr, frame);
          if (!s->attr.empty()) {
            const Value* ns = frame.find(s->targets[0]);
            if (!ns || !ns->is_namespace())
              type_error("cannot assign '" + s->targets[0] + "." + s->attr +
                         "': only namespace() objects take attribute assignment");
            ns->dict_ref().set(s->attr, std::move(v));
          } else {
            assign(frame, s->targets, v);
          }
          break;
        }
        case Stmt::K::set_block: {
          std::string captured;
          Frame inner;
          inner.parent = &frame;
          exec(s->body, inner, captured);
          frame.vars[s->targets[0]] = Value::string(captured);
          break;
        }
        case Stmt::K::break_:
          return Flow::break_;
        case Stmt::K::continue_:
          return Flow::continue_;
      }
    }
    return Flow::normal;
  }

  static void assign(Frame& frame, const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) {
      frame.vars[targets[0]] = v;
      return;
    }
    List items = iterate(v);
    if (items.size() != targets.size())
      type_error("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) +
                 " names");
    for (size_t i = 0; i < targets.size(); ++i) frame.vars[targets[i]] = items[i];
  }

  void exec_for(const Stmt& s, Frame& frame, std::string& out) {
    Value seq = eval(*s.expr, frame);
    if (seq.is_none()) type_error("'NoneType' object is not iterable (for loop over none)");
    List items = iterate(seq);
    if (s.filter) {
      List kept;
      for (const auto& it : items) {
        Frame f;
        f.parent = &frame;
        assign(f, s.targets, it);
        if (eval(*s.filter, f).truthy()) kept.push_back(it);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      exec(s.else_body, frame, out);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Frame f;
      f.parent = &frame;
      assign(f, s.targets, items[static_cast<size_t>(i)]);
      auto loop = std::make_shared<Dict>();
      loop->entries = {
          {"index", Value::integer(i + 1)},
          {"index0", Value::integer(i)},
          {"revindex", Value::integer(n - i)},
          {"revindex0", Value::integer(n - i - 1)},
          {"first", Value::boolean(i == 0)},
          {"last", Value::boolean(i == n - 1)},
          {"length", Value::integer(n)},
          {"depth", Value::integer(1)},
          {"depth0", Value::integer(0)},
          {"previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("loop.previtem")},
          {"nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("loop.nextitem")},
          {"cycle", Value::callable("loop.cycle", [i](const List& a, const Kwargs&) {
             if (a.empty()) type_error("loop.cycle() needs at least one value");
             return a[static_cast<size_t>(i) % a.size()];
           })}};
      f.vars["loop"] = Value::dict(loop);
      Flow fl = exec(s.body, f, out);
      if (fl == Flow::break_) break;
    }
  }

  Value eval(const Node& n, const Frame& frame) {
    line_ = n.line;
    switch (n.k) {
      case Node::K::literal:
        return n.lit;
      case Node::K::name: {
        const Value* v = frame.find(n.s);
        return v ? *v : Value::undefined(n.s);
      }
      case Node::K::getattr:
        return get_attr(eval(*n.args[0], frame), n.s);
      case Node::K::getitem:
        return get_item(eval(*n.args[0], frame), eval(*n.args[1], frame));
      case Node::K::slice: {
        Value obj = eval(*n.args[0], frame);
        Value a = n.args[1] ? eval(*n.args[1], frame) : Value::none();
        Value b = n.args[2] ? eval(*n.args[2], frame) : Value::none();
        Value c = n.args[3] ? eval(*n.args[3], frame) : Value::none();
        if (obj.is_list()) {
          List out;
          for (int64_t i : slice_indices(obj.items().size(), a, b, c)) out.push_back(obj.items()[static_cast<size_t>(i)]);
          return Value::list(std::move(out), obj.is_tuple());
        }
        if (obj.is_string()) {
          std::u32string u = utf8_decode(obj.str()), out;
          for (int64_t i : slice_indices(u.size(), a, b, c)) out += u[static_cast<size_t>(i)];
          return Value::string(utf8_encode(out));
        }
        if (obj.is_undefined()) type_error(describe_undefined(obj) + " (while slicing)");
        type_error("'" + obj.type_name() + "' object cannot be sliced");
      }
      case Node::K::call: {
        Value callee = eval(*n.args[0], frame);
        List args;
        for (size_t i = 1; i < n.args.size(); ++i) args.push_back(eval(*n.args[i], frame));
        Kwargs kw;
        for (const auto& [k, v] : n.kwargs) kw.emplace_back(k, eval(*v, frame));
        if (callee.is_undefined()) type_error(describe_undefined(callee) + " and cannot be called");
        if (!callee.is_callable()) type_error("'" + callee.type_name() + "' object is not callable");
        Value r = callee.fn().call(args, kw);
        line_ = n.line;
        return r;
      }
      case Node::K::filter: {
        Value v = eval(*n.args[0], frame);
        List args;
        for (size_t i = 1; i < n.args.size(); ++i) args.push_back(eval(*n.args[i], frame));
        Kwargs kw;
        for (const auto& [k, e] : n.kwargs) kw.emplace_back(k, eval(*e, frame));
        line_ = n.line;
        return apply_filter(n.s, v, args, kw);
      }
      case Node::K::test: {
        Value v = eval(*n.args[0], frame);
        List args;
        for (size_t i = 1; i < n.args.size(); ++i) args.push_back(eval(*n.args[i], frame));
        line_ = n.line;
        bool r = apply_test(n.s, v, args);
        return Value::boolean(n.negated ? !r : r);
      }
      case Node::K::neg:
      case Node::K::pos: {
        Value v = eval(*n.args[0], frame);
        if (!v.is_number()) type_error("bad operand type for unary " + std::string(n.k == Node::K::neg ? "-" : "+") + ": '" + v.type_name() + "'");
        if (n.k == Node::K::pos) return v.is_float() ? v : Value::integer(v.as_int());
        if (v.is_float()) return Value::floating(-v.as_double());
        check_overflow(v.as_int() == INT64_MIN);
        return Value::integer(-v.as_int());
      }
      case Node::K::not_:
        return Value::boolean(!eval(*n.args[0], frame).truthy());
      case Node::K::and_: {
        Value l = eval(*n.args[0], frame);
        return l.truthy() ? eval(*n.args[1], frame) : l;
      }
      case Node::K::or_: {
        Value l = eval(*n.args[0], frame);
        return l.truthy() ? l : eval(*n.args[1], frame);
      }
      case Node::K::binop: {
        Value a = eval(*n.args[0], frame);
        Value b = eval(*n.args[1], frame);
        line_ = n.line;
        return arith(n.s, a, b);
      }
      case Node::K::compare: {
        Value left = eval(*n.args[0], frame);
        for (size_t i = 0; i < n.ops.size(); ++i) {
          Value right = eval(*n.args[i + 1], frame);
          const std::string& op = n.ops[i];
          bool r;
          if (op == "==") r = equals(left, right);
          else if (op == "!=") r = !equals(left, right);
          else if (op == "in") r = contains(right, left);
          else if (op == "notin") r = !contains(right, left);
          else {
            int c = compare_values(left, right, op);
            r = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
          }
          if (!r) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Node::K::cond: {
        if (eval(*n.args[0], frame).truthy()) return eval(*n.args[1], frame);
        if (n.args[2]) return eval(*n.args[2], frame);
        return Value::undefined();
      }
      case Node::K::list:
      case Node::K::tuple: {
        List l;
        for (const auto& a : n.args) l.push_back(eval(*a, frame));
        return Value::list(std::move(l), n.k == Node::K::tuple);
      }
      case Node::K::dict: {
        auto d = std::make_shared<Dict>();
        for (size_t i = 0; i + 1 < n.args.size(); i += 2) {
          Value k = eval(*n.args[i], frame);
          if (!k.is_string()) type_error("dict literal keys must be strings in dsft's template engine, got " + k.type_name());
          d->set(k.str(), eval(*n.args[i + 1], frame));
        }
        return Value::dict(d);
      }
      case Node::K::concat: {
        std::string s;
        for (const auto& a : n.args) s += eval(*a, frame).to_output();
        return Value::string(s);
      }
    }
    type_error("internal: unknown expression node");
  }

  Value apply_filter(const std::string& name, const Value& v, const List& args, const Kwargs& kw) {
    if (name == "tojson") {
      DumpOptions o;
      if (const Value* a = arg(args, kw, 0, "indent"); a && !a->is_none()) {
        o.indent = static_cast<int>(a->as_int());
        o.item_separator = ",";
      }
      if (const Value* a = kwarg(kw, "ensure_ascii")) o.ensure_ascii = a->truthy();
      if (const Value* a = kwarg(kw, "sort_keys")) o.sort_keys = a->truthy();
      if (const Value* a = kwarg(kw, "separators"); a && !a->is_none()) {
        if (!a->is_list() || a->items().size() != 2) type_error("tojson separators must be a pair of strings");
        o.item_separator = want_string(a->items()[0], "tojson separators");
        o.key_separator = want_string(a->items()[1], "tojson separators");
      }
      return Value::string(to_json(v, o));
    }
    if (name == "trim") {
      const Value* c = arg(args, kw, 0, "chars");
      std::string chars = c && !c->is_none() ? want_string(*c, "trim") : "";
      return Value::string(py_strip(v.to_output(), c && !c->is_none() ? &chars : nullptr, true, true));
    }
    if (name == "length" || name == "count") {
      if (v.is_string()) return Value::integer(static_cast<int64_t>(utf8_decode(v.str()).size()));
      if (v.is_list()) return Value::integer(static_cast<int64_t>(v.items().size()));
      if (v.is_dict()) return Value::integer(static_cast<int64_t>(v.dict_ref().entries.size()));
      if (v.is_undefined()) return Value::integer(0);
      type_error("object of type '" + v.type_name() + "' has no length");
    }
    if (name == "string") return Value::string(v.to_output());
    if (name == "safe") return v;
    if (name == "e" || name == "escape") return Value::string(html_escape(v.to_output()));
    if (name == "items") {
      if (v.is_undefined()) return Value::list({});
      if (!v.is_dict() || v.is_namespace()) type_error("the items filter expects a mapping, got " + v.type_name());
      return call_method(v, "items", {}, {});
    }
    if (name == "join") {
      const Value* d = arg(args, kw, 0, "d");
      const Value* attr = arg(args, kw, 1, "attribute");
      std::string sep = d ? d->to_output() : "";
      std::string out;
      bool first = true;
      for (const auto& e : iterate(v)) {
        if (!first) out += sep;
        first = false;
        out += (attr ? get_attr_path(e, *attr) : e).to_output();
      }
      return Value::string(out);
    }
    if (name == "default" || name == "d") {
      const Value* dv = arg(args, kw, 0, "default_value");
      const Value* boolean = arg(args, kw, 1, "boolean");
      bool use = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
      if (use) return dv ? *dv : Value::string("");
      return v;
    }
    if (name == "upper") return Value::string(map_case(v.to_output(), 1));
    if (name == "lower") return Value::string(map_case(v.to_output(), 0));
    if (name == "capitalize") return Value::string(capitalize(v.to_output()));
    if (name == "title") return Value::string(title(v.to_output()));
    if (name == "first" || name == "last") {
      List l = iterate(v);
      if (l.empty()) return Value::undefined(name + " of an empty sequence");
      return name == "first" ? l.front() : l.back();
    }
    if (name == "reverse") {
      if (v.is_string()) {
        std::u32string u = utf8_decode(v.str());
        std::reverse(u.begin(), u.end());
        return Value::string(utf8_encode(u));
      }
      List l = iterate(v);
      std::reverse(l.begin(), l.end());
      return Value::list(std::move(l));
    }
    if (name == "list") return Value::list(iterate(v));
    if (name == "unique") {
      List out;
      for (const auto& e : iterate(v)) {
        bool seen = false;
        for (const auto& o : out) seen = seen || equals(o, e);
        if (!seen) out.push_back(e);
      }
      return Value::list(std::move(out));
    }
    if (name == "replace") {
      if (args.size() < 2) type_error("the replace filter takes two arguments");
      List a = args;
      return call_method(Value::string(v.to_output()), "replace", a, {});
    }
    if (name == "int") {
      const Value* dflt = arg(args, kw, 0, "default");
      if (v.is_int() || v.is_bool()) return Value::integer(v.as_int());
      if (v.is_float()) return Value::integer(static_cast<int64_t>(v.as_double()));
      if (v.is_string()) {
        std::string s = py_strip(v.str(), nullptr, true, true);
        char* end = nullptr;
        errno = 0;
        long long x = std::strtoll(s.c_str(), &end, 10);
        if (!s.empty() && end && *end == '\0' && errno == 0) return Value::integer(x);
        double d = std::strtod(s.c_str(), &end);
        if (!s.empty() && end && *end == '\0') return Value::integer(static_cast<int64_t>(d));
      }
      return dflt ? *dflt : Value::integer(0);
    }
    if (name == "float") {
      const Value* dflt = arg(args, kw, 0, "default");
      if (v.is_number()) return Value::floating(v.as_double());
      if (v.is_string()) {
        std::string s = py_strip(v.str(), nullptr, true, true);
        char* end = nullptr;
        double d = std::strtod(s.c_str(), &end);
        if (!s.empty() && end && *end == '\0') return Value::floating(d);
      }
      return dflt ? *dflt : Value::floating(0.0);
    }
    if (name == "abs") {
      if (v.is_float()) return Value::floating(std::fabs(v.as_double()));
      if (v.is_number()) return Value::integer(std::llabs(v.as_int()));
      type_error("bad operand type for abs(): '" + v.type_name() + "'");
    }
    if (name == "round") {
      const Value* p = arg(args, kw, 0, "precision");
      const Value* m = arg(args, kw, 1, "method");
      int prec = p ? static_cast<int>(p->as_int()) : 0;
      std::string method = m ? m->to_output() : "common";
      double scale = std::pow(10.0, prec), x = v.as_double() * scale;
      double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
      return Value::floating(r / scale);
    }
    if (name == "sum") {
      const Value* attr = arg(args, kw, 0, "attribute");
      const Value* start = arg(args, kw, 1, "start");
      Value acc = start ? *start : Value::integer(0);
      for (const auto& e : iterate(v)) acc = arith("+", acc, attr ? get_attr_path(e, *attr) : e);
      return acc;
    }
    if (name == "min" || name == "max" || name == "sort") {
      const Value* attr = kwarg(kw, "attribute");
      const Value* rev = kwarg(kw, "reverse");
      if (name == "sort" && !args.empty()) rev = &args[0];
      List l = iterate(v);
      auto key = [&](const Value& e) { return attr ? get_attr_path(e, *attr) : e; };
      auto less = [&](const Value& a, const Value& b) { return compare_values(key(a), key(b), "<") < 0; };
      if (name == "sort") {
        std::stable_sort(l.begin(), l.end(), less);
        if (rev && rev->truthy()) std::reverse(l.begin(), l.end());
        return Value::list(std::move(l));
      }
      if (l.empty()) return Value::undefined(name + " of an empty sequence");
      return name == "min" ? *std::min_element(l.begin(), l.end(), less) : *std::max_element(l.begin(), l.end(), less);
    }
    if (name == "dictsort") {
      if (!v.is_dict()) type_error("dictsort expects a mapping, got " + v.type_name());
      List l = call_method(v, "items", {}, {}).items();
      std::stable_sort(l.begin(), l.end(), [](const Value& a, const Value& b) {
        return compare_values(a.items()[0], b.items()[0], "<") < 0;
      });
      return Value::list(std::move(l));
    }
    if (name == "map") {
      List out;
      const Value* attr = kwarg(kw, "attribute");
      for (const auto& e : iterate(v)) {
        if (attr) {
          Value r = get_attr_path(e, *attr);
          const Value* dflt = kwarg(kw, "default");
          out.push_back(r.is_undefined() && dflt ? *dflt : r);
        } else {
          if (args.empty()) type_error("map() needs a filter name or attribute=");
          const std::string& f = want_string(args[0], "map()");
          if (!kFilters.count(f)) type_error("map() names the filter '" + f + "', which dsft's template engine does not support");
          out.push_back(apply_filter(f, e, List(args.begin() + 1, args.end()), {}));
        }
      }
      return Value::list(std::move(out));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      bool by_attr = name == "selectattr" || name == "rejectattr";
      bool want = name == "select" || name == "selectattr";
      size_t ti = by_attr ? 1 : 0;
      List out;
      for (const auto& e : iterate(v)) {
        Value subject = by_attr ? get_attr_path(e, args.empty() ? Value::string("") : args[0]) : e;
        bool r;
        if (args.size() > ti) {
          const std::string& t = want_string(args[ti], name + "()");
          if (!kTests.count(t)) type_error(name + "() names the test '" + t + "', which dsft's template engine does not support");
          r = apply_test(t, subject, List(args.begin() + static_cast<long>(ti) + 1, args.end()));
        } else {
          r = subject.truthy();
        }
        if (r == want) out.push_back(e);
      }
      return Value::list(std::move(out));
    }
    if (name == "indent") {
      const Value* w = arg(args, kw, 0, "width");
      const Value* first = arg(args, kw, 1, "first");
      const Value* blank = arg(args, kw, 2, "blank");
      std::string pad = w ? (w->is_string() ? w->str() : std::string(static_cast<size_t>(std::max<int64_t>(0, w->as_int())), ' '))
                          : std::string(4, ' ');
      std::string s = v.to_output(), out;
      size_t b = 0;
      bool first_line = true;
      while (true) {
        size_t e = s.find('\n', b);
        std::string line = s.substr(b, e == std::string::npos ? std::string::npos : e - b);
        bool indent_it = first_line ? (first && first->truthy()) : (!line.empty() || (blank && blank->truthy()));
        out += (indent_it ? pad : "") + line;
        if (e == std::string::npos) break;
        out += '\n';
        b = e + 1;
        first_line = false;
      }
      return Value::string(out);
    }
    if (name == "wordcount") return Value::integer(static_cast<int64_t>(py_split(v.to_output(), nullptr, -1).size()));
    type_error("the filter '" + name + "' is not implemented");
  }

  // attribute="a.b" as jinja2's make_attrgetter reads it (dotted path, integer parts index lists).
  static Value get_attr_path(const Value& v, const Value& path) {
    if (path.is_int()) return get_item(v, path);
    Value cur = v;
    std::string p = path.to_output();
    size_t b = 0;
    while (true) {
      size_t e = p.find('.', b);
      std::string part = p.substr(b, e == std::string::npos ? std::string::npos : e - b);
      bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
      cur = numeric ? get_item(cur, Value::integer(std::stoll(part))) : get_item(cur, Value::string(part));
      if (e == std::string::npos) return cur;
      if (cur.is_undefined()) return cur;
      b = e + 1;
    }
  }

  static bool apply_test(const std::string& name, const Value& v, const List& args) {
    auto need = [&](size_t n) {
      if (args.size() < n) type_error("the test '" + name + "' needs an argument");
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.is_bool();
    if (name == "true") return v.is_bool() && v.as_bool();
    if (name == "false") return v.is_bool() && !v.as_bool();
    if (name == "integer") return v.is_int();
    if (name == "float") return v.is_float();
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.is_dict() && !v.is_namespace();
    if (name == "iterable") return v.is_list() || v.is_string() || (v.is_dict() && !v.is_namespace()) || v.is_undefined();
    if (name == "sequence") return v.is_list() || v.is_string() || (v.is_dict() && !v.is_namespace());
    if (name == "callable") return v.is_callable();
    if (name == "escaped") return false;
    if (name == "lower") return v.is_string() && map_case(v.str(), 0) == v.str();
    if (name == "upper") return v.is_string() && map_case(v.str(), 1) == v.str();
    if (name == "odd" || name == "even") {
      if (!v.is_int() && !v.is_bool()) type_error("the test '" + name + "' expects an integer, got " + v.type_name());
      int64_t m = ((v.as_int() % 2) + 2) % 2;
      return name == "odd" ? m == 1 : m == 0;
    }
    if (name == "divisibleby") {
      need(1);
      int64_t d = args[0].as_int();
      if (d == 0) type_error("divisibleby 0");
      return v.as_int() % d == 0;
    }
    if (name == "sameas") {
      need(1);
      if (v.kind() != args[0].kind()) return false;
      if (v.is_none() || v.is_undefined()) return true;
      if (v.is_bool()) return v.as_bool() == args[0].as_bool();
      if (v.is_int()) return v.as_int() == args[0].as_int();  // CPython caches small ints; close enough
      return equals(v, args[0]) && (v.is_string() || v.is_float());
    }
    if (name == "in") {
      need(1);
      return contains(args[0], v);
    }
    need(1);
    if (name == "eq" || name == "equalto" || name == "==") return equals(v, args[0]);
    if (name == "ne" || name == "!=") return !equals(v, args[0]);
    int c = compare_values(v, args[0], name);
    if (name == "lt" || name == "lessthan" || name == "<") return c < 0;
    if (name == "le" || name == "<=") return c <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return c > 0;
    if (name == "ge" || name == ">=") return c >= 0;
    type_error("the test '" + name + "' is not implemented");
  }

  const std::string& tname_;
  Frame globals_;
  int line_ = 0;
};

}  // namespace

Template::Template(std::string_view source, std::string name, Options options) : name_(std::move(name)) {
  Lexer lexer(std::string(source), options, name_);
  Parser parser(lexer.run(), name_);
  body_ = parser.parse_template();
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const std::map<std::string, Value>& vars) const {
  Renderer r(name_, vars);
  return r.run(body_);
}

}  // namespace dsft::text::jinja
