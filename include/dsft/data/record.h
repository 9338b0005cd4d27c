// The record schema that flows through ingest and clean (JSON Lines, UTF-8), one of three shapes:
// {"text"}, Alpaca {"instruction","input","output"}, chat {"messages":[{"role","content"}]}.
// Every record also carries "id" and "source".
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace dsft::data {

enum class RecordShape { text, alpaca, messages };

const char* shape_name(RecordShape shape);

// The shape of a record, or dsft::Error saying why it has none (no text/instruction/messages key,
// a field of the wrong type).
RecordShape record_shape(const nlohmann::json& record);

// Checks a record completely: object, shape, string fields, "id" and "source" present; for
// messages: known roles (system, user, assistant, tool), content strings, no empty turn, user
// and assistant alternating after optional system messages, at least one assistant turn.
// Returns "" when valid, else a one-sentence reason.
std::string validate_record(const nlohmann::json& record);

}  // namespace dsft::data
