// `dsft ingest SOURCE... -o records.jsonl`: parses options and calls dsft::data::run_ingest.
#include "dsft/data/ingest.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "dsft/cli/commands.h"

namespace dsft::cli {

void add_ingest_command(CLI::App& app) {
  auto opt = std::make_shared<data::IngestOptions>();
  CLI::App* cmd = app.add_subcommand(
      "ingest",
      "Turn files, folders, documents, dialogues and SQL query results into training records (JSON Lines).\n"
      "Records are {\"text\"}, {\"instruction\",\"input\",\"output\"} or {\"messages\"}, each with \"id\" "
      "and \"source\".\n"
      "Rows without a template become \"column: value\" lines, or the matching record when the columns are\n"
      "named text / instruction,input,output / messages. Rows or records that cannot become a record stop "
      "the run\n"
      "with an error naming them, unless --skip-missing / --skip-invalid send them to the rejects file.");
  cmd->add_option("sources", opt->sources,
                  "Files, folders (searched recursively), sqlite:///path, postgresql://user@host:port/db or "
                  "mysql://user@host:port/db")
      ->required();
  cmd->add_option("-o,--output", opt->output, "Output JSON Lines file (written atomically)")->required();
  cmd->add_option(
         "--format", opt->format,
         "auto|csv|tsv|jsonl|json|sqlite|postgres|mysql|pdf|docx|pptx|xlsx|html|md|txt|alpaca|sharegpt")
      ->capture_default_str();
  cmd->add_option("--query", opt->query, "SQL query for database sources");
  cmd->add_option("--password-env", opt->password_env,
                  "Environment variable holding the database password (default: PGPASSWORD / MYSQL_PWD)");
  cmd->add_option("--template", opt->text_template,
                  "Row -> {\"text\"}: e.g. '产品{id}的规格是{spec}' ({{ }} for braces)");
  cmd->add_option("--instruction-template", opt->instruction_template, "Row -> Alpaca instruction");
  cmd->add_option("--input-template", opt->input_template, "Row -> Alpaca input (optional)");
  cmd->add_option("--output-template", opt->output_template, "Row -> Alpaca output");
  cmd->add_flag("--skip-missing", opt->skip_missing,
                "Send rows lacking a template field to the rejects file instead of failing");
  cmd->add_flag("--skip-invalid", opt->skip_invalid,
                "Send invalid records (bad dialogues, empty text, bad JSON lines) to the rejects file "
                "instead of failing");
  cmd->add_option("--rejects", opt->rejects, "Rejects file (default: <output>.rejects.jsonl)");
  cmd->add_option("--delimiter", opt->delimiter, "CSV delimiter: , ; | tab (default: detected)");
  cmd->add_option("--encoding", opt->encoding,
                  "Text encoding: auto (UTF-8, else GB18030/GBK), utf-8, gbk, gb18030, utf-16, ...")
      ->capture_default_str();
  cmd->add_option("--include", opt->include, "Glob for files in folders (repeatable), e.g. '*.pdf'");
  cmd->add_option("--exclude", opt->exclude, "Glob of files in folders to leave out (repeatable)");
  cmd->add_option("--chunk-size", opt->chunk_size, "Characters per document chunk")->capture_default_str();
  cmd->add_option("--chunk-overlap", opt->chunk_overlap, "Characters repeated between document chunks")
      ->capture_default_str();
  cmd->callback([opt] {
    data::IngestSummary s = data::run_ingest(*opt);
    std::fprintf(stderr, "%s\n", s.one_line().c_str());
  });
}

}  // namespace dsft::cli
