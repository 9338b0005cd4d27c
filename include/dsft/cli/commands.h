// One function per subcommand; src/main.cpp lists them in order. Each lives in src/cli/<name>.cpp,
// parses its options and calls one function of its module.
#pragma once
namespace CLI { class App; }

namespace dsft::cli {
void add_init_command(CLI::App& app);
void add_forward_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_ingest_command(CLI::App& app);
void add_clean_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_export_command(CLI::App& app);
}  // namespace dsft::cli
