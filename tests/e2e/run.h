// Runs the dsft binary built beside the tests and captures its exit code and output.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace e2e {

struct Result {
  int code = -1;
  std::string out;  // stdout and stderr together unless the command redirects them
};

inline Result run_shell(const std::string& cmd) {
  Result r;
  std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline Result run_dsft(const std::string& args) { return run_shell(std::string(DSFT_BINARY) + " " + args); }

}  // namespace e2e
