// Process-wide logger on stderr; every line passes through redact() first.
#include "dsft/util/log.h"

#include <regex>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "dsft/util/error.h"

namespace dsft::util {

static std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_color_mt("dsft");
    lg->set_pattern("[dsft] %^%l%$: %v");
    lg->set_level(spdlog::level::info);
    return lg;
  }();
  return l;
}

static spdlog::level::level_enum to_spd(LogLevel l) {
  switch (l) {
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

void init_logging(LogLevel level) { logger()->set_level(to_spd(level)); }
void set_log_level(LogLevel level) { logger()->set_level(to_spd(level)); }

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::debug;
  if (name == "info") return LogLevel::info;
  if (name == "warn" || name == "warning") return LogLevel::warn;
  if (name == "error") return LogLevel::error;
  if (name == "off" || name == "quiet") return LogLevel::off;
  throw UsageError("unknown log level '" + name + "' (expected debug, info, warn, error or off)");
}

std::string redact(const std::string& line) {
  static const std::regex url_password(R"(([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]*@)");
  static const std::regex email(R"([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})");
  static const std::regex api_key(
      R"(\b(sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{30,}|xox[abp]-[A-Za-z0-9-]{10,}))");
  std::string out = std::regex_replace(line, url_password, "$1:***@");
  out = std::regex_replace(out, email, "[EMAIL]");
  out = std::regex_replace(out, api_key, "[API_KEY]");
  return out;
}

void log_debug(const std::string& msg) { logger()->debug(redact(msg)); }
void log_info(const std::string& msg) { logger()->info(redact(msg)); }
void log_warn(const std::string& msg) { logger()->warn(redact(msg)); }
void log_error(const std::string& msg) { logger()->error(redact(msg)); }

}  // namespace dsft::util
