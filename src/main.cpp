// dsft: the thin binary. Builds the command line from src/cli/ and turns every failure into a
// one-line message: exit 0 success, 1 failure, 2 usage error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "dsft/cli/commands.h"
#include "dsft/util/error.h"
#include "dsft/util/log.h"
#include "dsft/version.h"

int main(int argc, char** argv) {
  CLI::App app{"dsft: fine-tune DeepSeek models on private data, offline, in one binary"};
  app.set_version_flag("--version", std::string("dsft ") + DSFT_VERSION);
  app.require_subcommand(1);
  app.get_formatter()->column_width(36);
  // Applied as soon as it is read, so every subcommand logs at this level; `fallthrough` lets it
  // follow the subcommand too (`dsft train --log-level debug ...`).
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn, error or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warn", "warning", "error", "off", "quiet"}))
      ->each([](const std::string& level) { dsft::util::set_log_level(dsft::util::parse_log_level(level)); });
  app.fallthrough();

  // The pipeline in order: ingest -> clean -> train -> eval -> export, then the model tools.
  // (each line: dsft::cli::add_<name>_command(app);)
  dsft::cli::add_ingest_command(app);
  dsft::cli::add_clean_command(app);
  dsft::cli::add_train_command(app);
  dsft::cli::add_eval_command(app);
  dsft::cli::add_export_command(app);
  dsft::cli::add_tokenize_command(app);
  dsft::cli::add_init_command(app);
  dsft::cli::add_forward_command(app);
  dsft::cli::add_generate_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const dsft::UsageError& e) {
    std::fprintf(stderr, "dsft: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsft: %s\n", dsft::util::redact(e.what()).c_str());
    return 1;
  }
  return 0;
}
