// Files: atomic writes (temp file + fsync + rename) with private permissions, whole-file reads.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace dsft::util {

// Reads a whole file; throws dsft::Error naming the path when it cannot.
std::string read_file(const std::string& path);

// Writes `path` atomically: the bytes go to a temp file beside it (mode 0600), which is
// fsync'ed and renamed over `path`, so a reader sees the old file or the new one, never a part.
void write_file_atomic(const std::string& path, std::string_view bytes);

// As above, for output produced piecewise: `fill` receives a FILE* open on the temp file.
// If `fill` throws, the temp file is removed and `path` is untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& fill);

// Creates a directory and any missing parents, each with mode 0700, if it does not exist.
void make_private_dir(const std::string& path);

bool path_exists(const std::string& path);

}  // namespace dsft::util
