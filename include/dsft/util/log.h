// Logging: spdlog to stderr, with personal data masked before a line is written.
#pragma once
#include <string>

namespace dsft::util {

enum class LogLevel { debug, info, warn, error, off };

// Sets up the process-wide logger (stderr, "[dsft] level: message").
void init_logging(LogLevel level);
void set_log_level(LogLevel level);
LogLevel parse_log_level(const std::string& name);

// Masks secrets that must never reach a log: passwords in connection URLs (scheme://user:pw@host),
// e-mail addresses and API-key shapes. Cheap enough for every log line.
std::string redact(const std::string& line);

void log_debug(const std::string& msg);
void log_info(const std::string& msg);
void log_warn(const std::string& msg);
void log_error(const std::string& msg);

}  // namespace dsft::util
