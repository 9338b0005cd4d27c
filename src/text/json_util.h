// Small helpers over simdjson's DOM for reading tokenizer.json and tokenizer_config.json, with
// errors that name the file and the field.
#pragma once
#include <simdjson.h>

#include <optional>
#include <string>
#include <string_view>

#include "dsft/util/error.h"

namespace dsft::text::json {

using simdjson::dom::element;

inline bool has(element obj, const char* key) {
  auto r = obj[key];
  return !r.error() && !r.value_unsafe().is_null();
}

inline std::optional<element> field(element obj, const char* key) {
  auto r = obj[key];
  if (r.error() || r.value_unsafe().is_null()) return std::nullopt;
  return r.value_unsafe();
}

inline element require(element obj, const char* key, const std::string& origin, const char* where) {
  auto r = obj[key];
  if (r.error()) throw Error(origin + ": " + where + " has no field \"" + key + "\"");
  return r.value_unsafe();
}

inline std::string_view string_of(element v, const std::string& origin, const std::string& what) {
  std::string_view s;
  if (v.get_string().get(s)) throw Error(origin + ": " + what + " must be a string");
  return s;
}

inline std::string get_string(element obj, const char* key, const std::string& origin, const char* where,
                              std::optional<std::string> fallback = std::nullopt) {
  auto r = obj[key];
  if (r.error() || r.value_unsafe().is_null()) {
    if (fallback) return *fallback;
    throw Error(origin + ": " + where + " has no string field \"" + key + "\"");
  }
  return std::string(string_of(r.value_unsafe(), origin, std::string(where) + "." + key));
}

inline bool get_bool(element obj, const char* key, bool fallback, const std::string& origin, const char* where) {
  auto r = obj[key];
  if (r.error() || r.value_unsafe().is_null()) return fallback;
  bool b;
  if (r.value_unsafe().get_bool().get(b)) throw Error(origin + ": " + where + "." + key + " must be true or false");
  return b;
}

inline int64_t get_int(element v, const std::string& origin, const std::string& what) {
  int64_t i;
  if (v.get_int64().get(i)) {
    uint64_t u;
    if (v.get_uint64().get(u) || u > INT64_MAX) throw Error(origin + ": " + what + " must be an integer");
    i = static_cast<int64_t>(u);
  }
  return i;
}

inline std::string type_of(element obj, const std::string& origin, const char* where) {
  return get_string(obj, "type", origin, where);
}

}  // namespace dsft::text::json
