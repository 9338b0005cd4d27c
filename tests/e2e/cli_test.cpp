// e2e: the real dsft binary: --version, --help, usage errors.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <string>

#include "e2e/run.h"

TEST(Cli, Version) {
  auto r = e2e::run_dsft("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("dsft "), std::string::npos);
}

TEST(Cli, HelpListsCommands) {
  auto r = e2e::run_dsft("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("Usage"), std::string::npos);
}

TEST(Cli, UnknownCommandIsUsageError) {
  auto r = e2e::run_dsft("no-such-command");
  EXPECT_EQ(r.code, 2);
}
