// JSON Lines and JSON array sources: records already in one of the three shapes (kept, with
// extra keys passed through), Alpaca and ShareGPT/OpenAI dialogues (converted and validated),
// and any other objects as rows (templates or "key: value" lines). Parsing is simdjson; arrays
// are split element by element so memory stays flat.
#include <simdjson.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

#include "data/ingest/internal.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::data::ingest {

using nlohmann::json;
namespace dom = simdjson::dom;

namespace {

void append_number(std::string& out, dom::element e) {
  char buf[64];
  std::to_chars_result r{};
  switch (e.type()) {
    case dom::element_type::INT64:
      r = std::to_chars(buf, buf + sizeof buf, int64_t(e));
      break;
    case dom::element_type::UINT64:
      r = std::to_chars(buf, buf + sizeof buf, uint64_t(e));
      break;
    default:
      r = std::to_chars(buf, buf + sizeof buf, double(e));
      break;
  }
  out.append(buf, r.ptr - buf);
}

// Re-serialises a parsed value (strings were validated as UTF-8 by simdjson).
void write_element(std::string& out, dom::element e) {
  switch (e.type()) {
    case dom::element_type::ARRAY: {
      out.push_back('[');
      bool first = true;
      for (dom::element c : dom::array(e)) {
        if (!first) out.push_back(',');
        first = false;
        write_element(out, c);
      }
      out.push_back(']');
      break;
    }
    case dom::element_type::OBJECT: {
      out.push_back('{');
      bool first = true;
      for (dom::key_value_pair kv : dom::object(e)) {
        if (!first) out.push_back(',');
        first = false;
        append_json_string(out, kv.key);
        out.push_back(':');
        write_element(out, kv.value);
      }
      out.push_back('}');
      break;
    }
    case dom::element_type::STRING:
      append_json_string(out, std::string_view(e));
      break;
    case dom::element_type::BOOL:
      out.append(bool(e) ? "true" : "false");
      break;
    case dom::element_type::NULL_VALUE:
      out.append("null");
      break;
    default:
      append_number(out, e);
  }
}

json to_json(dom::element e) {
  switch (e.type()) {
    case dom::element_type::ARRAY: {
      json a = json::array();
      for (dom::element c : dom::array(e)) a.push_back(to_json(c));
      return a;
    }
    case dom::element_type::OBJECT: {
      json o = json::object();
      for (dom::key_value_pair kv : dom::object(e)) o[std::string(kv.key)] = to_json(kv.value);
      return o;
    }
    case dom::element_type::STRING:
      return std::string(std::string_view(e));
    case dom::element_type::INT64:
      return int64_t(e);
    case dom::element_type::UINT64:
      return uint64_t(e);
    case dom::element_type::DOUBLE:
      return double(e);
    case dom::element_type::BOOL:
      return bool(e);
    case dom::element_type::NULL_VALUE:
      return nullptr;
  }
  return nullptr;
}

json to_json(dom::object o) {
  json j = json::object();
  for (dom::key_value_pair kv : o) j[std::string(kv.key)] = to_json(kv.value);
  return j;
}

// ShareGPT "from" values -> chat roles.
const char* sharegpt_role(std::string_view from) {
  if (from == "human" || from == "user") return "user";
  if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "model" || from == "bot" ||
      from == "function_call")
    return "assistant";
  if (from == "system") return "system";
  if (from == "tool" || from == "function" || from == "observation") return "tool";
  return nullptr;
}

class JsonSource {
 public:
  JsonSource(const std::string& name, const IngestOptions& opt, Sink& sink)
      : name_(name), opt_(opt), sink_(sink), rows_(opt, sink) {}

  // One value: the line/item `n` of the file.
  void value(dom::element e, size_t n, const char* unit) {
    gen_id_ = name_ + ":" + unit + std::to_string(n);
    source_ = name_ + ":" + unit + " " + std::to_string(n);
    const std::string& f = opt_.format;
    if (e.type() != dom::element_type::OBJECT) {
      if (e.type() == dom::element_type::STRING && f != "alpaca" && f != "sharegpt" &&
          !rows_.has_templates()) {
        std::string_view s(e);
        if (s.find_first_not_of(" \t\r\n") == std::string_view::npos)
          return invalid(to_json(e), "the string is empty");
        std::string& b = sink_.begin(gen_id_, source_);
        b.append(",\"text\":");
        append_json_string(b, s);
        sink_.commit();
        return;
      }
      return invalid(to_json(e), std::string("the ") + unit + " is not a JSON object");
    }
    dom::object o(e);
    dom::element v;
    bool has_messages = o["messages"].get(v) == simdjson::SUCCESS;
    bool has_conv = o["conversations"].get(v) == simdjson::SUCCESS;
    // Templates make records from flat objects; dialogues keep their shape (a template cannot
    // say anything about a list of turns), so one run can mix tables and chat logs.
    if (rows_.has_templates() && f != "alpaca" && f != "sharegpt" && !has_messages && !has_conv)
      return row(o);
    bool has_instruction = o["instruction"].get(v) == simdjson::SUCCESS;
    bool has_text = o["text"].get(v) == simdjson::SUCCESS;
    if (f == "alpaca") {
      if (!has_instruction) return invalid(to_json(e), "an Alpaca record needs 'instruction' and 'output'");
      return alpaca(o);
    }
    if (f == "sharegpt") {
      if (!has_conv && !has_messages) return invalid(to_json(e), "a ShareGPT record needs 'conversations'");
      return dialogue(o, has_conv);
    }
    if (has_messages || has_conv) return dialogue(o, !has_messages);
    if (has_instruction) return alpaca(o);
    if (has_text) return text(o);
    return row(o);
  }

  void invalid_json(std::string_view raw, size_t n, const char* unit, simdjson::error_code err) {
    std::string id = name_ + ":" + unit + std::to_string(n);
    std::string source = name_ + ":" + unit + " " + std::to_string(n);
    std::string r(raw.substr(0, 2000));
    sink_.problem(Problem::invalid, id, source,
                  std::string("not valid JSON (") + simdjson::error_message(err) + ")", json(r));
  }

 private:
  void invalid(const json& data, const std::string& reason) {
    sink_.problem(Problem::invalid, id_text_or_gen(data), source_, reason, data);
  }
  std::string id_text_or_gen(const json& data) {
    if (data.is_object() && data.contains("id") && (data["id"].is_string() || data["id"].is_number_integer()))
      return data["id"].is_string() ? data["id"].get<std::string>() : data["id"].dump();
    return gen_id_;
  }

  // The record's own id when it has a usable one, else the generated one.
  std::string& begin(dom::object o) {
    dom::element id;
    if (o["id"].get(id) == simdjson::SUCCESS) {
      if (id.type() == dom::element_type::STRING && !std::string_view(id).empty()) {
        id_buf_.clear();
        append_json_string(id_buf_, std::string_view(id));
        return sink_.begin_raw_id(id_buf_, source_);
      }
      if (id.type() == dom::element_type::INT64 || id.type() == dom::element_type::UINT64) {
        id_buf_.clear();
        append_number(id_buf_, id);
        return sink_.begin_raw_id(id_buf_, source_);
      }
    }
    return sink_.begin(gen_id_, source_);
  }

  void extras(std::string& b, dom::object o, std::initializer_list<std::string_view> known) {
    for (dom::key_value_pair kv : o) {
      bool skip = kv.key == "id" || kv.key == "source";
      for (auto k : known) skip = skip || kv.key == k;
      if (skip) continue;
      b.push_back(',');
      append_json_string(b, kv.key);
      b.push_back(':');
      write_element(b, kv.value);
    }
  }

  static bool get_string(dom::object o, const char* key, std::string_view& out) {
    dom::element v;
    if (o[key].get(v) != simdjson::SUCCESS || v.type() != dom::element_type::STRING) return false;
    out = std::string_view(v);
    return true;
  }
  static bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

  void text(dom::object o) {
    std::string_view t;
    if (!get_string(o, "text", t)) return invalid(to_json(o), "field 'text' is not a string");
    if (blank(t)) return invalid(to_json(o), "field 'text' is empty");
    std::string& b = begin(o);
    b.append(",\"text\":");
    append_json_string(b, t);
    extras(b, o, {"text"});
    sink_.commit();
  }

  void alpaca(dom::object o) {
    std::string_view ins, inp, out;
    dom::element v;
    if (!get_string(o, "instruction", ins)) return invalid(to_json(o), "field 'instruction' is not a string");
    if (o["output"].get(v) != simdjson::SUCCESS)
      return invalid(to_json(o), "an Alpaca record needs 'output'");
    if (!get_string(o, "output", out)) return invalid(to_json(o), "field 'output' is not a string");
    if (o["input"].get(v) == simdjson::SUCCESS && v.type() != dom::element_type::NULL_VALUE &&
        !get_string(o, "input", inp))
      return invalid(to_json(o), "field 'input' is not a string");
    if (blank(ins)) return invalid(to_json(o), "field 'instruction' is empty");
    if (blank(out)) return invalid(to_json(o), "field 'output' is empty");
    std::string& b = begin(o);
    b.append(",\"instruction\":");
    append_json_string(b, ins);
    b.append(",\"input\":");
    append_json_string(b, inp);
    b.append(",\"output\":");
    append_json_string(b, out);
    extras(b, o, {"instruction", "input", "output"});
    sink_.commit();
  }

  void dialogue(dom::object o, bool sharegpt) {
    json rec = to_json(o);
    json msgs = json::array();
    if (sharegpt) {
      const json& conv = rec["conversations"];
      if (!conv.is_array()) return invalid(rec, "field 'conversations' is not an array");
      if (rec.contains("system") && rec["system"].is_string() && !blank(rec["system"].get<std::string>()))
        msgs.push_back({{"role", "system"}, {"content", rec["system"]}});
      for (size_t i = 0; i < conv.size(); ++i) {
        const json& t = conv[i];
        std::string where = "conversation turn " + std::to_string(i);
        if (!t.is_object() || !t.contains("from") || !t["from"].is_string())
          return invalid(rec, where + " has no 'from'");
        const char* role = sharegpt_role(t["from"].get<std::string>());
        if (!role)
          return invalid(rec, where + " has unknown 'from' value '" + t["from"].get<std::string>() +
                                  "' (expected human, gpt, system, tool or function)");
        if (!t.contains("value") || !t["value"].is_string())
          return invalid(rec, where + " has no string 'value'");
        msgs.push_back({{"role", role}, {"content", t["value"]}});
      }
      rec.erase("conversations");
      rec.erase("system");
    } else {
      msgs = rec["messages"];
      if (!msgs.is_array()) return invalid(rec, "field 'messages' is not an array");
      // OpenAI content parts: text parts are joined; anything else cannot be trained on as text.
      for (size_t i = 0; i < msgs.size(); ++i) {
        json& m = msgs[i];
        if (!m.is_object() || !m.contains("content") || !m["content"].is_array()) continue;
        std::string joined;
        for (const json& part : m["content"]) {
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
              !part["text"].is_string())
            return invalid(rec, "message " + std::to_string(i) + " has content that is not text (" +
                                    (part.is_object() ? part.value("type", "?") : std::string("?")) + ")");
          joined += part["text"].get<std::string>();
        }
        m["content"] = joined;
      }
    }
    if (!(rec.contains("id") && ((rec["id"].is_string() && !rec["id"].get<std::string>().empty()) ||
                                 rec["id"].is_number_integer())))
      rec["id"] = gen_id_;
    rec["source"] = source_;
    rec["messages"] = std::move(msgs);
    // Key order of the output: id, source, messages, then the rest.
    json out = json::object();
    out["id"] = rec["id"];
    out["source"] = rec["source"];
    out["messages"] = rec["messages"];
    for (auto it = rec.begin(); it != rec.end(); ++it)
      if (!out.contains(it.key())) out[it.key()] = it.value();
    sink_.write_validated(out);
  }

  void row(dom::object o) {
    names_.clear();
    values_.clear();
    null_.clear();
    arena_.clear();
    std::vector<std::pair<size_t, size_t>> spans;  // offsets into arena_ for non-string values
    for (dom::key_value_pair kv : o) {
      names_.push_back(kv.key);
      dom::element v = kv.value;
      if (v.type() == dom::element_type::STRING) {
        values_.push_back(std::string_view(v));
        null_.push_back(0);
        spans.emplace_back(SIZE_MAX, 0);
      } else {
        size_t start = arena_.size();
        if (v.type() != dom::element_type::NULL_VALUE) write_element(arena_, v);
        values_.emplace_back();
        null_.push_back(v.type() == dom::element_type::NULL_VALUE);
        spans.emplace_back(start, arena_.size() - start);
      }
    }
    for (size_t i = 0; i < spans.size(); ++i)
      if (spans[i].first != SIZE_MAX)
        values_[i] = std::string_view(arena_).substr(spans[i].first, spans[i].second);
    rows_.convert(&names_, values_, null_, gen_id_, source_);
  }

  std::string name_;
  const IngestOptions& opt_;
  Sink& sink_;
  RowConverter rows_;
  std::string gen_id_, source_, id_buf_, arena_;
  std::vector<std::string_view> names_, values_;
  std::vector<char> null_;
};

// Splits a top-level JSON array into its elements without parsing them, so that each can be
// parsed on its own and memory stays bounded by the largest element.
class ArraySplitter {
 public:
  ArraySplitter(std::FILE* f, std::string name) : f_(f), name_(std::move(name)), buf_(1 << 20) {}

  // Returns 'a' for an array, 'v' when the whole file is one value (read into `elem`).
  char start(std::string& elem) {
    int c = skip_ws();
    if (c == 0xEF) {  // UTF-8 BOM
      get();
      get();
      get();
      c = skip_ws();
    }
    if (c == '[') {
      get();
      return 'a';
    }
    elem.clear();
    while ((c = get()) != EOF) elem.push_back(static_cast<char>(c));
    return 'v';
  }

  // The next element's bytes in `elem`; false after the closing bracket.
  bool next(std::string& elem) {
    elem.clear();
    int c = skip_ws();
    if (c == ',' && !first_) {
      get();
      c = skip_ws();
    } else if (c == ']') {
      get();
      return false;
    }
    if (c == EOF) throw Error(name_ + ": the JSON array is not closed (a ']' is missing)");
    if (c == ']') {
      get();
      return false;
    }
    first_ = false;
    int depth = 0;
    bool in_str = false, esc = false;
    for (;;) {
      c = peek();
      if (c == EOF) {
        if (depth == 0 && !in_str) break;
        throw Error(name_ + ": the file ends inside a JSON value");
      }
      if (in_str) {
        get();
        elem.push_back(static_cast<char>(c));
        if (esc)
          esc = false;
        else if (c == '\\')
          esc = true;
        else if (c == '"')
          in_str = false;
        continue;
      }
      if (depth == 0 && (c == ',' || c == ']')) break;
      get();
      elem.push_back(static_cast<char>(c));
      if (c == '"')
        in_str = true;
      else if (c == '{' || c == '[')
        ++depth;
      else if (c == '}' || c == ']') {
        if (--depth < 0) throw Error(name_ + ": unbalanced brackets in the JSON array");
      }
    }
    return true;
  }

 private:
  int peek() {
    if (pos_ == len_) {
      len_ = std::fread(buf_.data(), 1, buf_.size(), f_);
      pos_ = 0;
      if (len_ == 0) {
        if (std::ferror(f_)) throw Error("cannot read " + name_ + ": " + std::strerror(errno));
        return EOF;
      }
    }
    return static_cast<unsigned char>(buf_[pos_]);
  }
  int get() {
    int c = peek();
    if (c != EOF) ++pos_;
    return c;
  }
  int skip_ws() {
    int c;
    while ((c = peek()) == ' ' || c == '\n' || c == '\r' || c == '\t') get();
    return c;
  }
  std::FILE* f_;
  std::string name_;
  std::vector<char> buf_;
  size_t pos_ = 0, len_ = 0;
  bool first_ = true;
};

}  // namespace

void ingest_json(const std::string& path, const std::string& name, bool lines, const IngestOptions& opt,
                 Sink& sink) {
  std::string enc;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(open_utf8(path, opt.encoding, &enc), &std::fclose);
  dom::parser parser;
  JsonSource src(name, opt, sink);
  try {
    if (lines) {
      LineReader reader(f.get(), path);
      std::string_view line;
      while (reader.next(line)) {
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        dom::element e;
        // LineReader guarantees SIMDJSON_PADDING readable bytes after each line: no copy.
        auto err = parser.parse(line.data(), line.size(), false).get(e);
        if (err) {
          src.invalid_json(line, reader.line_number(), "line", err);
          continue;
        }
        src.value(e, reader.line_number(), "line");
      }
    } else {
      ArraySplitter split(f.get(), path);
      std::string elem;
      if (split.start(elem) == 'v') {
        dom::element e;
        auto err = parser.parse(elem).get(e);
        if (err) {
          // Several objects one per line in a .json file: JSON Lines under another name.
          if (util::trim(elem).rfind('{', 0) == 0 && elem.find('\n') != std::string::npos) {
            f.reset();
            return ingest_json(path, name, true, opt, sink);
          }
          throw Error(path + " is not valid JSON (" + simdjson::error_message(err) + ")");
        }
        src.value(e, 1, "item");
        return;
      }
      size_t n = 0;
      while (split.next(elem)) {
        ++n;
        dom::element e;
        auto err = parser.parse(elem).get(e);
        if (err) {
          src.invalid_json(elem, n, "item", err);
          continue;
        }
        src.value(e, n, "item");
      }
    }
  } catch (const Error& e) {
    if (enc != "utf-8" && std::string(e.what()).find("cannot read") != std::string::npos)
      throw Error(std::string(e.what()) + " (decoding it as " + enc + "; pass --encoding to choose another)");
    throw;
  }
}

}  // namespace dsft::data::ingest
