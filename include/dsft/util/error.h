// dsft::Error: the one exception type the CLI turns into a one-line message and exit code 1.
#pragma once
#include <stdexcept>
#include <string>

namespace dsft {

// A user-facing failure: one sentence naming what was wrong, with the value, and a hint where
// one helps. Thrown by every module; caught only in main.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A command-line usage error (exit code 2).
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(what) {}
};

}  // namespace dsft
