// Walking a module tree for dsft::peft::Linear layers; adapter injection, freezing, quantisation.
#include "dsft/peft/inject.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "dsft/util/error.h"

namespace dsft::peft {

namespace {

std::string join(const std::vector<std::string>& items, size_t limit = 8) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += ", ... (" + std::to_string(items.size()) + " in all)";
  return out;
}

}  // namespace

void for_each_linear(torch::nn::Module& root,
                     const std::function<void(const std::string&, LinearImpl&)>& fn) {
  if (auto* self = dynamic_cast<LinearImpl*>(&root)) fn("", *self);
  // include_self = false: root need not be held by a shared_ptr.
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    if (auto* lin = dynamic_cast<LinearImpl*>(item.value().get())) fn(item.key(), *lin);
  }
}

LoraOptions lora_options_for(const LoraConfig& config, const std::string& path) {
  return LoraOptions()
      .r(config.rank_for(path))
      .alpha(config.alpha_for(path))
      .dropout(config.lora_dropout)
      .use_rslora(config.use_rslora);
}

LoraConfig resolve_target_modules(torch::nn::Module& root, const LoraConfig& config) {
  if (!config.is_all_linear()) return config;
  std::set<std::string> names;
  for_each_linear(root, [&](const std::string& path, LinearImpl&) {
    const std::string leaf = module_leaf_name(path);
    if (leaf != "lm_head" && !leaf.empty()) names.insert(leaf);
  });
  LoraConfig resolved = config;
  resolved.target_modules.assign(names.begin(), names.end());
  if (resolved.target_modules.empty()) {
    throw dsft::Error("target_modules all-linear found no linear layer besides lm_head in the model");
  }
  return resolved;
}

InjectionResult inject_lora(torch::nn::Module& root, const LoraConfig& config) {
  config.validate();
  InjectionResult result;
  result.config = resolve_target_modules(root, config);
  const LoraConfig& cfg = result.config;

  // Every check before the first change: a failed call leaves the model as it was.
  std::vector<std::string> wrong_type;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    const torch::nn::Module* m = item.value().get();
    const std::string leaf = module_leaf_name(item.key());
    // An existing adapter's own parts are not candidates.
    if (leaf == "lora_A" || leaf == "lora_B" || leaf == "lora_dropout") continue;
    if (cfg.targets(item.key()) && !dynamic_cast<const LinearImpl*>(m)) {
      wrong_type.push_back(item.key() + " (" + item.value()->name() + ")");
    }
  }
  if (!wrong_type.empty()) {
    throw dsft::Error("target_modules selects modules that are not dsft::peft::Linear layers: " +
                      join(wrong_type) + "; LoRA goes on linear layers only: narrow target_modules");
  }
  std::vector<std::pair<std::string, LinearImpl*>> targets;
  for_each_linear(root, [&](const std::string& path, LinearImpl& lin) {
    if (!path.empty() && cfg.targets(path)) targets.emplace_back(path, &lin);
  });
  if (targets.empty()) {
    std::vector<std::string> leaves;
    for_each_linear(root, [&](const std::string& path, LinearImpl&) {
      const std::string leaf = module_leaf_name(path);
      if (std::find(leaves.begin(), leaves.end(), leaf) == leaves.end()) leaves.push_back(leaf);
    });
    const std::string wanted =
        cfg.target_modules_regex.empty() ? join(cfg.target_modules) : cfg.target_modules_regex;
    throw dsft::Error(
        "target_modules (" + wanted + ") matched no linear layer in the model" +
        (leaves.empty() ? std::string(", which has none") : "; its linear layers are named " + join(leaves)));
  }
  for (const auto& [path, lin] : targets) {
    lin->enable_lora(lora_options_for(cfg, path));
    result.adapted.push_back(path);
  }
  mark_only_lora_as_trainable(root, cfg);
  return result;
}

void mark_only_lora_as_trainable(torch::nn::Module& root, const LoraConfig& config) {
  for (auto& p : root.named_parameters(/*recurse=*/true)) p.value().set_requires_grad(false);
  for_each_linear(root, [&](const std::string&, LinearImpl& lin) {
    if (!lin.has_lora()) return;
    lin.lora_A->weight.set_requires_grad(true);
    lin.lora_B->weight.set_requires_grad(true);
    if (config.bias == "lora_only" && lin.bias.defined()) lin.bias.set_requires_grad(true);
  });
  if (config.bias == "all") {
    for (auto& p : root.named_parameters(/*recurse=*/true)) {
      if (module_leaf_name(p.key()) == "bias") p.value().set_requires_grad(true);
    }
  }
  if (!config.modules_to_save.empty()) {
    for (const auto& item : root.named_modules("", /*include_self=*/false)) {
      if (!config.saves(item.key())) continue;
      for (auto& p : item.value()->named_parameters(/*recurse=*/true)) {
        p.value().set_requires_grad(true);
      }
    }
  }
}

void set_adapters_enabled(torch::nn::Module& root, bool enabled) {
  for_each_linear(root, [&](const std::string&, LinearImpl& lin) { lin.set_adapter_enabled(enabled); });
}

void merge_adapters(torch::nn::Module& root) {
  for_each_linear(root, [&](const std::string&, LinearImpl& lin) {
    if (lin.has_lora()) merge_and_unload(lin);
  });
}

ParameterCount count_parameters(torch::nn::Module& root) {
  ParameterCount count;
  for (const auto& p : root.named_parameters(/*recurse=*/true)) {
    count.total += p.value().numel();
    if (p.value().requires_grad()) count.trainable += p.value().numel();
  }
  for_each_linear(root, [&](const std::string&, LinearImpl& lin) {
    if (lin.is_quantized()) {
      count.total += lin.options().in_features() * lin.options().out_features();
    }
  });
  return count;
}

std::vector<std::string> quantize_linears(torch::nn::Module& root, BaseFormat format, const Nf4Options& nf4,
                                          const std::vector<std::string>& skip) {
  std::vector<std::string> done;
  if (format == BaseFormat::dense) return done;
  for_each_linear(root, [&](const std::string& path, LinearImpl& lin) {
    if (lin.is_quantized()) return;
    if (std::find(skip.begin(), skip.end(), module_leaf_name(path)) != skip.end()) return;
    lin.quantize(format, nf4);
    done.push_back(path);
  });
  return done;
}

}  // namespace dsft::peft
