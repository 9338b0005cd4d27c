// Reading `dsft eval --data`: JSON lines sorted into perplexity records, QA items and
// multiple-choice items, every invalid record an error naming its file and line.
#include "dsft/eval/eval_data.h"

#include <cctype>
#include <filesystem>
#include <fstream>

#include "dsft/data/record.h"
#include "dsft/text/chat_template.h"
#include "dsft/util/error.h"

namespace dsft::eval {

namespace {
using ojson = nlohmann::ordered_json;

std::string record_label(const ojson& record, size_t line_no) {
  if (record.is_object() && record.contains("id") && record["id"].is_string())
    return record["id"].get<std::string>();
  if (record.is_object() && record.contains("id") && record["id"].is_number()) return record["id"].dump();
  return "line " + std::to_string(line_no);
}

std::string category_of(const ojson& record, const std::string& where) {
  if (!record.contains("category") || record["category"].is_null()) return "";
  if (!record["category"].is_string()) throw Error(where + ": \"category\" must be a string");
  return record["category"].get<std::string>();
}

}  // namespace

bool is_multiple_choice(const ojson& record) {
  return record.is_object() && (record.contains("choices") || record.contains("options"));
}

McItem parse_multiple_choice(const ojson& record, const std::string& where) {
  McItem item;
  const char* list_key = record.contains("choices") ? "choices" : "options";
  const ojson& list = record[list_key];
  if (!list.is_array() || list.size() < 2)
    throw Error(where + ": \"" + list_key + "\" must be a list of at least two option strings");
  for (const auto& c : list) {
    if (!c.is_string() || c.get<std::string>().empty())
      throw Error(where + ": every entry of \"" + list_key + "\" must be a non-empty string");
    item.choices.push_back(c.get<std::string>());
  }
  if (record.contains("messages")) {
    item.prompt = record["messages"];
    if (!item.prompt.is_array() || item.prompt.empty() || !item.prompt.back().is_object() ||
        item.prompt.back().value("role", "") != "user")
      throw Error(where + ": a multiple-choice \"messages\" prompt must be a list ending with a user turn");
  } else {
    std::string question;
    if (record.contains("question") && record["question"].is_string()) {
      question = record["question"].get<std::string>();
    } else if (record.contains("instruction") && record["instruction"].is_string()) {
      question = record["instruction"].get<std::string>();
      if (record.contains("input") && record["input"].is_string() &&
          !record["input"].get<std::string>().empty())
        question += "\n\n" + record["input"].get<std::string>();
    } else {
      throw Error(
          where +
          ": a multiple-choice record needs a \"question\" (or \"instruction\" or \"messages\") string");
    }
    if (question.empty()) throw Error(where + ": the multiple-choice question is empty");
    item.prompt = ojson::array();
    if (record.contains("system") && record["system"].is_string())
      item.prompt.push_back({{"role", "system"}, {"content", record["system"].get<std::string>()}});
    item.prompt.push_back({{"role", "user"}, {"content", question}});
  }
  if (!record.contains("answer"))
    throw Error(where +
                ": a multiple-choice record needs \"answer\" (an index, a letter or the option text)");
  const ojson& a = record["answer"];
  const auto n = static_cast<int64_t>(item.choices.size());
  if (a.is_number_integer()) {
    item.answer = a.get<int64_t>();
    if (item.answer < 0 || item.answer >= n)
      throw Error(where + ": \"answer\" " + a.dump() + " is not an option index (0.." +
                  std::to_string(n - 1) + ")");
  } else if (a.is_string()) {
    const std::string s = a.get<std::string>();
    item.answer = -1;
    for (int64_t i = 0; i < n; ++i)
      if (item.choices[static_cast<size_t>(i)] == s) item.answer = i;
    if (item.answer < 0 && s.size() == 1 && std::isalpha(static_cast<unsigned char>(s[0]))) {
      const int64_t i = std::toupper(static_cast<unsigned char>(s[0])) - 'A';
      if (i < n) item.answer = i;
    }
    if (item.answer < 0)
      throw Error(where + ": \"answer\" \"" + s + "\" is neither an option letter (A.." +
                  std::string(1, static_cast<char>('A' + n - 1)) + ") nor the text of an option");
  } else {
    throw Error(where + ": \"answer\" must be an index, a letter or the option text (got " + a.dump() + ")");
  }
  return item;
}

EvalData read_eval_data(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error("--data file " + path + " does not exist");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read --data file " + path);
  EvalData d;
  d.path = path;
  std::string line;
  size_t line_no = 0;
  size_t records = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    ojson record;
    try {
      record = ojson::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::string msg = e.what();
      if (auto p = msg.find("column "); p != std::string::npos) msg = msg.substr(p);
      throw Error(where + ": not valid JSON (" + msg + ")");
    }
    if (!record.is_object()) throw Error(where + ": a record must be a JSON object");
    ++records;
    const std::string id = record_label(record, line_no);
    const std::string category = category_of(record, where);
    if (is_multiple_choice(record)) {
      McItem item = parse_multiple_choice(record, where + " (record " + id + ")");
      item.id = id;
      item.category = category;
      d.mc.push_back(std::move(item));
      d.mc_lines.push_back(line_no);
      continue;
    }
    nlohmann::json plain(record);
    data::RecordShape shape;
    try {
      shape = data::record_shape(plain);
    } catch (const Error& e) {
      throw Error(where + " (record " + id + "): " + e.what() +
                  " (multiple-choice records need \"choices\" and \"answer\")");
    }
    ++d.lm_records;
    if (shape == data::RecordShape::text) continue;
    if (!plain.contains("id")) plain["id"] = id;
    if (!plain.contains("source")) plain["source"] = path;
    if (std::string reason = data::validate_record(plain); !reason.empty())
      throw Error(where + " (record " + id + "): " + reason);
    QaItem q;
    q.id = id;
    q.category = category;
    ojson messages = text::messages_from_record(record);
    // The reference is the last assistant turn; the prompt is everything before it.
    size_t last = messages.size();
    for (size_t i = messages.size(); i-- > 0;)
      if (messages[i].value("role", "") == "assistant") {
        last = i;
        break;
      }
    if (last == messages.size()) continue;  // validate_record requires one; defensive
    q.reference = messages[last].value("content", "");
    q.prompt = ojson::array();
    for (size_t i = 0; i < last; ++i) q.prompt.push_back(messages[i]);
    if (q.prompt.empty()) continue;
    d.qa.push_back(std::move(q));
  }
  if (records == 0) throw Error("--data file " + path + " holds no records");
  return d;
}

}  // namespace dsft::eval
