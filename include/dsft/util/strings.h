// Small string helpers shared by every module.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace dsft::util {

std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
std::string trim(std::string_view s);
bool starts_with(std::string_view s, std::string_view prefix);
bool ends_with(std::string_view s, std::string_view suffix);

// Levenshtein distance, for "did you mean" hints on unknown keys.
size_t edit_distance(std::string_view a, std::string_view b);
// The candidate closest to `key` by edit distance ("" when there are none).
std::string closest_match(std::string_view key, const std::vector<std::string>& candidates);

// Human-readable byte count: "1.5 GiB".
std::string format_bytes(double bytes);

}  // namespace dsft::util
