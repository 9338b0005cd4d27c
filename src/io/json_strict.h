// JSON parsing for file headers and indexes: nlohmann's parser plus a duplicate-key check (which
// nlohmann silently resolves to the last value, so a crafted header could hide a tensor entry).
#pragma once
#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

#include "dsft/util/error.h"

namespace dsft::io::detail {

// Parses [first, last) as JSON; throws dsft::Error starting with `what` (e.g. "safetensors file
// /x: header") on malformed JSON or on a key repeated within one object.
inline nlohmann::json parse_json_strict(const char* first, const char* last, const std::string& what) {
  std::vector<std::set<std::string>> keys_per_object;
  std::string duplicate;
  auto check = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      keys_per_object.emplace_back();
    } else if (event == E::object_end) {
      if (!keys_per_object.empty()) keys_per_object.pop_back();
    } else if (event == E::key && !keys_per_object.empty() && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys_per_object.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(first, last, check);
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; keep the position and reason.
    if (auto pos = msg.find("] "); msg.rfind("[json.exception", 0) == 0 && pos != std::string::npos)
      msg = msg.substr(pos + 2);
    throw Error(what + " is not valid JSON (" + msg + ")");
  }
  if (!duplicate.empty())
    throw Error(what + " has the key '" + duplicate + "' twice in one object");
  return j;
}

}  // namespace dsft::io::detail
