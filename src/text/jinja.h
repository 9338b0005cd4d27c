// A Jinja2 subset interpreter for chat templates: the values a template sees, the parsed template,
// and rendering with the settings transformers uses (trim_blocks, lstrip_blocks, loopcontrols).
// Private to the text module; chat_template.h is the public face.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsft::text::jinja {

class Value;
using List = std::vector<Value>;
struct Dict;
struct Callable;
using Kwargs = std::vector<std::pair<std::string, Value>>;

// A template value with Python semantics: what jinja2 would hold for the JSON a chat template is
// given (None, bool, int, float, str, list, dict), plus Undefined, namespace objects and callables.
class Value {
 public:
  enum class Kind : uint8_t { undefined, none, boolean, integer, floating, string, list, dict, callable };

  Value() = default;  // Undefined
  static Value undefined(std::string name = {});
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double f);
  static Value string(std::string s);
  static Value list(List items, bool is_tuple = false);
  static Value dict(std::shared_ptr<Dict> d);
  static Value callable(std::string name, std::function<Value(const List&, const Kwargs&)> fn);

  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_int() const { return kind_ == Kind::integer; }
  bool is_float() const { return kind_ == Kind::floating; }
  bool is_number() const { return kind_ == Kind::integer || kind_ == Kind::floating || kind_ == Kind::boolean; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_list() const { return kind_ == Kind::list; }
  bool is_tuple() const { return kind_ == Kind::list && is_tuple_; }
  bool is_dict() const { return kind_ == Kind::dict; }
  bool is_namespace() const;
  bool is_callable() const { return kind_ == Kind::callable; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return i_; }  // also for booleans (Python: True == 1)
  double as_double() const;               // ints, floats and booleans
  const std::string& str() const { return s_; }  // string value or the undefined name
  const List& items() const { return *list_; }
  Dict& dict_ref() const { return *dict_; }
  const Callable& fn() const { return *fn_; }

  bool truthy() const;
  // str(value) as Python prints it; Undefined prints as "".
  std::string to_output() const;
  // repr(value): strings quoted as Python does.
  std::string repr() const;
  // Python's type name, for error messages ("str", "NoneType", "list", ...).
  std::string type_name() const;

 private:
  Kind kind_ = Kind::undefined;
  bool b_ = false;
  bool is_tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Callable> fn_;
};

// An insertion-ordered str-keyed mapping (Python dict). Namespaces are dicts whose attributes may
// be assigned with {% set ns.x = ... %}.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  bool is_namespace = false;

  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

struct Callable {
  std::string name;
  std::function<Value(const List&, const Kwargs&)> call;
};

bool equals(const Value& a, const Value& b);

// json.dumps(value, ensure_ascii, indent, separators, sort_keys) as Python writes it.
struct DumpOptions {
  bool ensure_ascii = false;
  int indent = -1;  // < 0: single line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const DumpOptions& opts);

// UTF-8 <-> code points: Python indexes, slices and measures strings by code point. A malformed
// byte decodes to U+FFFD (strings reaching a template come from JSON, which is valid UTF-8).
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);

// Python's str.isspace() for one code point.
bool py_isspace(char32_t c);
// Python's str.strip / lstrip / rstrip; `chars` == nullptr strips whitespace.
std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right);

struct Node;
struct Stmt;

// Settings of the environment: transformers renders chat templates with trim_blocks and
// lstrip_blocks on; both are switchable for other callers.
struct Options {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

// A parsed template. Parsing checks that every statement, filter and test the template uses is
// one this interpreter implements, so an unsupported template fails at load, not mid-training.
class Template {
 public:
  // `name` appears in error messages ("chat template deepseek-v3 line 3: ...").
  Template(std::string_view source, std::string name, Options options = {});
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `vars` as the global variables. Throws dsft::Error on any runtime error
  // (undefined attribute, type error, raise_exception(...)).
  std::string render(const std::map<std::string, Value>& vars) const;

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::vector<std::unique_ptr<Stmt>> body_;
};

}  // namespace dsft::text::jinja
