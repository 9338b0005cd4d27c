// Headless Chromium for tests that must see a page the way a browser draws it: finds the binary
// and returns the DOM after the page's scripts ran (--dump-dom).
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace dsft::test {

// The Chromium binary: $DSFT_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH;
// "" when there is none.
inline std::string find_chromium() {
  if (const char* env = std::getenv("DSFT_CHROMIUM"); env && *env) return env;
  const char* path = std::getenv("PATH");
  if (!path) return "";
  std::string p = path;
  for (const char* name : {"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}) {
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = p.find(':', start);
      if (end == std::string::npos) end = p.size();
      std::filesystem::path cand = std::filesystem::path(p.substr(start, end - start)) / name;
      if (!cand.empty() && ::access(cand.c_str(), X_OK) == 0) return cand.string();
      start = end + 1;
    }
  }
  return "";
}

// Loads `html_path` in headless Chromium and returns the serialised DOM after load; "" when the
// browser failed. --no-sandbox because CI runs as root; a private profile directory so parallel
// runs do not share one; `timeout` so a hung browser fails the test instead of the whole run.
inline std::string chromium_dump_dom(const std::string& chromium, const std::string& html_path,
                                     const std::string& profile_dir) {
  std::string cmd = "timeout 90 '" + chromium +
                    "' --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
                    "--disable-extensions --user-data-dir='" +
                    profile_dir + "' --dump-dom 'file://" + html_path + "' 2>/dev/null";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return "";
  std::string out;
  std::array<char, 65536> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  ::pclose(f);
  return out;
}

}  // namespace dsft::test
