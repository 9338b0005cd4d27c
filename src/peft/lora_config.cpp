// LoraConfig validation and PEFT's module-selection rules.
#include "dsft/peft/lora_config.h"

#include <cmath>
#include <regex>

#include "dsft/util/error.h"

namespace dsft::peft {

namespace {

std::regex compile(const std::string& pattern, const char* field) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw dsft::Error(std::string(field) + " holds an invalid regular expression '" + pattern + "' (" +
                      e.what() + ")");
  }
}

// PEFT's get_pattern_key: a pattern key applies to a module whose path ends with it (after a dot).
bool pattern_applies(const std::string& key, const std::string& path) {
  return std::regex_match(path, compile("(.*\\.)?(" + key + ")", "rank_pattern/alpha_pattern"));
}

}  // namespace

bool module_path_matches(const std::string& path, const std::string& name) {
  if (path == name) return true;
  return path.size() > name.size() && path.compare(path.size() - name.size(), name.size(), name) == 0 &&
         path[path.size() - name.size() - 1] == '.';
}

std::string module_leaf_name(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

void LoraConfig::validate() const {
  if (r <= 0) throw dsft::Error("LoRA r must be a positive integer (got " + std::to_string(r) + ")");
  if (!std::isfinite(lora_alpha) || lora_alpha <= 0) {
    throw dsft::Error("lora_alpha must be a positive number (got " + std::to_string(lora_alpha) + ")");
  }
  if (!(lora_dropout >= 0.0 && lora_dropout < 1.0)) {
    throw dsft::Error("lora_dropout must be in [0, 1) (got " + std::to_string(lora_dropout) + ")");
  }
  if (bias != "none" && bias != "all" && bias != "lora_only") {
    throw dsft::Error("bias must be one of none, all, lora_only (got '" + bias + "')");
  }
  if (target_modules_regex.empty() && target_modules.empty()) {
    throw dsft::Error(
        "target_modules is empty; name the layers to adapt, e.g. [q_proj, v_proj] or all-linear");
  }
  if (!target_modules_regex.empty()) compile(target_modules_regex, "target_modules");
  for (const auto& t : target_modules) {
    if (t.empty()) throw dsft::Error("target_modules holds an empty name");
  }
  for (const auto& [key, rank] : rank_pattern) {
    compile(key, "rank_pattern");
    if (rank <= 0) {
      throw dsft::Error("rank_pattern['" + key + "'] must be positive (got " + std::to_string(rank) + ")");
    }
  }
  for (const auto& [key, alpha] : alpha_pattern) {
    compile(key, "alpha_pattern");
    if (!std::isfinite(alpha) || alpha <= 0) {
      throw dsft::Error("alpha_pattern['" + key + "'] must be positive (got " + std::to_string(alpha) + ")");
    }
  }
}

bool LoraConfig::is_all_linear() const {
  return target_modules_regex.empty() && target_modules.size() == 1 && target_modules[0] == "all-linear";
}

bool LoraConfig::targets(const std::string& module_path) const {
  if (!target_modules_regex.empty()) {
    return std::regex_match(module_path, compile(target_modules_regex, "target_modules"));
  }
  for (const auto& t : target_modules) {
    if (module_path_matches(module_path, t)) return true;
  }
  return false;
}

bool LoraConfig::saves(const std::string& module_path) const {
  for (const auto& m : modules_to_save) {
    if (module_path_matches(module_path, m)) return true;
  }
  return false;
}

int64_t LoraConfig::rank_for(const std::string& module_path) const {
  for (const auto& [key, rank] : rank_pattern) {
    if (pattern_applies(key, module_path)) return rank;
  }
  return r;
}

double LoraConfig::alpha_for(const std::string& module_path) const {
  for (const auto& [key, alpha] : alpha_pattern) {
    if (pattern_applies(key, module_path)) return alpha;
  }
  return lora_alpha;
}

double LoraConfig::scale_for(const std::string& module_path) const {
  const double rank = static_cast<double>(rank_for(module_path));
  const double alpha = alpha_for(module_path);
  return use_rslora ? alpha / std::sqrt(rank) : alpha / rank;
}

}  // namespace dsft::peft
