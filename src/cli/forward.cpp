// `dsft forward --model DIR --input ids.safetensors -o logits.safetensors`: one forward pass,
// logits for every position (for parity checks against other implementations).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "dsft/cli/commands.h"
#include "dsft/model/commands.h"

namespace dsft::cli {

void add_forward_command(CLI::App& app) {
  auto req = std::make_shared<model::ForwardRequest>();
  CLI::App* cmd = app.add_subcommand("forward",
                                     "Run a model on token ids and write the logits of every position.\n"
                                     "Reads input_ids (I64 [batch, seq]) from a safetensors file and writes "
                                     "logits (F32 [batch, seq, vocab]).\n"
                                     "Needs only config.json and the weights in the model directory.");
  cmd->add_option("--model", req->model_dir, "Model directory (HF format: config.json + *.safetensors)")
      ->required();
  cmd->add_option("--input", req->input, "safetensors file with input_ids")->required();
  cmd->add_option("-o,--output", req->output, "Output safetensors file for the logits")->required();
  cmd->add_option("--dtype", req->dtype, "Compute dtype: float32 or bfloat16")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "fp32", "bfloat16", "bf16"}));
  cmd->add_option("--device", req->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->callback([req] {
    auto shape = model::run_forward(*req);
    std::fprintf(stderr, "wrote logits [%lld, %lld, %lld] to %s\n", static_cast<long long>(shape[0]),
                 static_cast<long long>(shape[1]), static_cast<long long>(shape[2]), req->output.c_str());
  });
}

}  // namespace dsft::cli
