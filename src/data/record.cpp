// Record shapes and their validation (see include/dsft/data/record.h).
#include "dsft/data/record.h"

#include "dsft/util/error.h"

namespace dsft::data {

const char* shape_name(RecordShape shape) {
  switch (shape) {
    case RecordShape::text: return "text";
    case RecordShape::alpaca: return "alpaca";
    case RecordShape::messages: return "messages";
  }
  return "?";
}

RecordShape record_shape(const nlohmann::json& r) {
  if (!r.is_object()) throw Error("record is not a JSON object");
  if (r.contains("messages")) {
    if (!r["messages"].is_array()) throw Error("record field 'messages' is not an array");
    return RecordShape::messages;
  }
  if (r.contains("instruction")) {
    if (!r["instruction"].is_string()) throw Error("record field 'instruction' is not a string");
    return RecordShape::alpaca;
  }
  if (r.contains("text")) {
    if (!r["text"].is_string()) throw Error("record field 'text' is not a string");
    return RecordShape::text;
  }
  throw Error("record has none of 'text', 'instruction' or 'messages'");
}

static std::string check_string_field(const nlohmann::json& r, const char* key, bool required) {
  if (!r.contains(key)) return required ? std::string("missing field '") + key + "'" : "";
  if (!r[key].is_string()) return std::string("field '") + key + "' is not a string";
  return "";
}

std::string validate_record(const nlohmann::json& r) {
  RecordShape shape;
  try {
    shape = record_shape(r);
  } catch (const Error& e) {
    return e.what();
  }
  if (!r.contains("id") || !(r["id"].is_string() || r["id"].is_number_integer()))
    return "missing field 'id'";
  if (auto e = check_string_field(r, "source", true); !e.empty()) return e;
  switch (shape) {
    case RecordShape::text:
      return "";
    case RecordShape::alpaca:
      if (auto e = check_string_field(r, "input", false); !e.empty()) return e;
      return check_string_field(r, "output", true);
    case RecordShape::messages: {
      const auto& msgs = r["messages"];
      if (msgs.empty()) return "'messages' is empty";
      std::string prev;
      bool has_assistant = false;
      for (size_t i = 0; i < msgs.size(); ++i) {
        const auto& m = msgs[i];
        std::string where = "message " + std::to_string(i);
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
          return where + " has no 'role'";
        std::string role = m["role"];
        if (role != "system" && role != "user" && role != "assistant" && role != "tool")
          return where + " has unknown role '" + role + "' (expected system, user, assistant or tool)";
        bool has_tool_calls = m.contains("tool_calls") && m["tool_calls"].is_array() && !m["tool_calls"].empty();
        if (!m.contains("content") || !(m["content"].is_string() || (m["content"].is_null() && has_tool_calls)))
          return where + " has no string 'content'";
        if (m["content"].is_string() && m["content"].get<std::string>().empty() && !has_tool_calls &&
            role != "system")
          return where + " (" + role + ") is empty";
        if (role == "system" && !prev.empty() && prev != "system")
          return where + ": a system message after the conversation started";
        if (role == "user" && prev == "user") return where + ": two user turns in a row";
        if (role == "assistant" && prev != "user" && prev != "tool")
          return where + ": an assistant turn that does not follow a user or tool turn";
        if (role == "tool" && prev != "assistant" && prev != "tool")
          return where + ": a tool result that does not follow an assistant turn";
        if (role == "assistant") has_assistant = true;
        prev = role;
      }
      if (!has_assistant) return "'messages' has no assistant turn";
      return "";
    }
  }
  return "";
}

}  // namespace dsft::data
