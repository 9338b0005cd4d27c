// util: atomic private writes, string helpers, log redaction.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "dsft/util/strings.h"

namespace fs = std::filesystem;
using namespace dsft;

TEST(Fs, AtomicWriteIsPrivateAndComplete) {
  fs::path dir = fs::temp_directory_path() / ("dsft_util_test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string p = (dir / "a.txt").string();
  util::write_file_atomic(p, std::string_view("hello"));
  EXPECT_EQ(util::read_file(p), "hello");
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A failing writer leaves the old file and no temp files behind.
  EXPECT_THROW(util::write_file_atomic(p, [](std::FILE* f) {
                 std::fputs("partial", f);
                 throw Error("boom");
               }),
               Error);
  EXPECT_EQ(util::read_file(p), "hello");
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().find(".tmp.") != std::string::npos;
  EXPECT_EQ(n, 0u);
  fs::remove_all(dir);
}

TEST(Fs, PrivateDirMakesEveryMissingFolder0700) {
  fs::path root = fs::temp_directory_path() / ("dsft_util_dirs-" + std::to_string(::getpid()));
  fs::create_directories(root);
  util::make_private_dir((root / "a/b/c").string());
  for (const char* sub : {"a", "a/b", "a/b/c"}) {
    struct stat st {};
    ASSERT_EQ(::stat((root / sub).c_str(), &st), 0) << sub;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << sub;
  }
  util::make_private_dir((root / "a/b/c").string());  // existing: nothing to do
  util::write_file_atomic((root / "file").string(), std::string_view("x"));
  EXPECT_THROW(util::make_private_dir((root / "file/sub").string()), Error);
  fs::remove_all(root);
}

TEST(Fs, ReadMissingFileNamesIt) {
  try {
    util::read_file("/nonexistent/x.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.json"), std::string::npos);
  }
}

TEST(Strings, ClosestMatch) {
  EXPECT_EQ(util::closest_match("learing_rate", {"learning_rate", "max_steps", "lora_alpha"}), "learning_rate");
  EXPECT_EQ(util::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(util::split("a,b,,c", ','), (std::vector<std::string>{"a", "b", "", "c"}));
  EXPECT_EQ(util::trim("  x y \n"), "x y");
  EXPECT_EQ(util::format_bytes(1536), "1.5 KiB");
}

TEST(Log, RedactsSecrets) {
  std::string s = util::redact("connecting to postgresql://bob:hunter2@localhost/db as bob@example.com");
  EXPECT_EQ(s.find("hunter2"), std::string::npos);
  EXPECT_EQ(s.find("bob@example.com"), std::string::npos);
  EXPECT_NE(s.find("postgresql://bob:***@localhost/db"), std::string::npos);
}
