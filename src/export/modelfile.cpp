// Ollama Modelfile for a GGUF export: the chat format of the model's family as an Ollama Go
// template (.System, .Messages with .Role/.Content), and stop strings for its end-of-turn tokens.
// BOS is not written in the template: llama.cpp adds it from tokenizer.ggml.add_bos_token.
#include <algorithm>
#include <map>

#include "dsft/export/gguf_export.h"
#include "dsft/util/error.h"

namespace dsft::exporter {

namespace {

struct Family {
  std::string template_text;
  std::vector<std::string> stops;
};

// DeepSeek V3/R1 and the R1 distills: system text first, then <｜User｜>..<｜Assistant｜>..<eos>.
const char* kDeepseekV3 =
    "{{- if .System }}{{ .System }}{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "{{- if eq .Role \"user\" }}<\xEF\xBD\x9CUser\xEF\xBD\x9C>{{ .Content }}\n"
    "{{- else if eq .Role \"assistant\" }}<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>{{ .Content }}"
    "{{- if not $last }}<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>{{- end }}\n"
    "{{- end }}\n"
    "{{- if and $last (ne .Role \"assistant\") }}<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>{{- end }}\n"
    "{{- end }}";

const char* kChatml =
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}<|im_start|>{{ .Role }}\n{{ .Content }}"
    "{{ if not $last }}<|im_end|>\n{{ end }}\n"
    "{{- if and (ne .Role \"assistant\") $last }}<|im_end|>\n<|im_start|>assistant\n{{ end }}\n"
    "{{- end }}";

const char* kLlama3 =
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}\n"
    "{{- if and (ne .Role \"assistant\") $last }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}\n"
    "{{- end }}";

// DeepSeek LLM chat: "User: ...\n\nAssistant: ...<eos>".
const char* kDeepseekLlm =
    "{{- if .System }}{{ .System }}\n\n{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "{{- if eq .Role \"user\" }}User: {{ .Content }}\n\n"
    "{{- else if eq .Role \"assistant\" }}Assistant: {{ .Content }}{{ if not $last }}{{ $.Eos }}{{ end }}\n"
    "{{- end }}\n"
    "{{- if and $last (ne .Role \"assistant\") }}Assistant:{{ end }}\n"
    "{{- end }}";

// DeepSeek Coder instruct: "### Instruction:\n...\n### Response:\n...<|EOT|>".
const char* kDeepseekCoder =
    "{{- if .System }}{{ .System }}\n{{ end }}\n"
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "{{- if eq .Role \"user\" }}### Instruction:\n{{ .Content }}\n"
    "{{- else if eq .Role \"assistant\" }}### Response:\n{{ .Content }}{{ if not $last }}\n<|EOT|>\n{{ end }}\n"
    "{{- end }}\n"
    "{{- if and $last (ne .Role \"assistant\") }}### Response:\n{{ end }}\n"
    "{{- end }}";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

// A Modelfile string in triple quotes cannot itself hold `"""`.
std::string triple_quoted(const std::string& s, const std::string& what) {
  if (s.find("\"\"\"") != std::string::npos) throw Error(what + " contains \"\"\", which a Modelfile cannot quote");
  return "\"\"\"" + s + "\"\"\"";
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string render_modelfile(const ModelfileOptions& o) {
  const std::string eos = o.eos_token;
  std::map<std::string, Family> families = {
      {"deepseek-v3", {kDeepseekV3, {"<\xEF\xBD\x9CUser\xEF\xBD\x9C>", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"}}},
      {"chatml", {kChatml, {"<|im_start|>", "<|im_end|>"}}},
      {"llama3", {kLlama3, {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}}},
      {"deepseek-llm", {kDeepseekLlm, {"User:"}}},
      {"deepseek-coder", {kDeepseekCoder, {"<|EOT|>", "### Instruction:"}}},
  };
  std::string out = "# Ollama Modelfile written by dsft: ollama create <name> -f Modelfile\n";
  out += "FROM " + o.gguf_file + "\n";
  if (!o.adapter_file.empty()) out += "ADAPTER " + o.adapter_file + "\n";
  auto it = families.find(o.family);
  if (it != families.end()) {
    std::string t = replace_all(it->second.template_text, "{{ $.Eos }}", eos);
    out += "TEMPLATE " + triple_quoted(t, "the chat template") + "\n";
    std::vector<std::string> stops = it->second.stops;
    if (!eos.empty() && std::find(stops.begin(), stops.end(), eos) == stops.end()) stops.push_back(eos);
    for (const auto& s : stops) out += "PARAMETER stop " + quoted(s) + "\n";
  } else if (!eos.empty()) {
    out += "PARAMETER stop " + quoted(eos) + "\n";
  }
  if (!o.system.empty()) out += "SYSTEM " + triple_quoted(o.system, "the system prompt") + "\n";
  return out;
}

}  // namespace dsft::exporter
