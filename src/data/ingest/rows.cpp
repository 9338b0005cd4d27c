// The record sink (output and rejects with their counters, and the one rule for a row that
// cannot become a record) and the row converter shared by CSV, XLSX, SQL and JSON objects.
#include <algorithm>
#include <cstring>

#include "data/ingest/internal.h"
#include "dsft/data/record.h"
#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::data::ingest {

using nlohmann::json;

static std::string dump_lenient(const json& j) {
  // Rejected rows may hold bytes that are not UTF-8 (that can be why they were rejected).
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---- Sink ----

void Sink::begin_source(const std::string& name, const std::string& format) {
  SourceSummary s;
  s.name = name;
  s.format = format;
  summary_.sources.push_back(std::move(s));
}

std::string& Sink::begin(std::string_view id, std::string_view source) {
  std::string& b = out_.buffer();
  mark_ = b.size();
  b.append("{\"id\":", 6);
  if (!append_json_string(b, id)) {
    b.resize(mark_);
    throw Error("the name '" + std::string(id) + "' is not valid UTF-8 (rename the file)");
  }
  b.append(",\"source\":", 10);
  append_json_string(b, source);
  return b;
}

std::string& Sink::begin_raw_id(std::string_view id_json, std::string_view source) {
  std::string& b = out_.buffer();
  mark_ = b.size();
  b.append("{\"id\":", 6);
  b.append(id_json);
  b.append(",\"source\":", 10);
  if (!append_json_string(b, source)) {
    b.resize(mark_);
    throw Error("the name '" + std::string(source) + "' is not valid UTF-8 (rename the file)");
  }
  return b;
}

void Sink::commit() {
  out_.buffer().push_back('}');
  out_.end_line();
  ++current().written;
  ++summary_.written;
}

void Sink::rollback() {
  out_.buffer().resize(mark_);
}

void Sink::write_validated(const json& record) {
  std::string reason = validate_record(record);
  std::string id = record["id"].is_string() ? record["id"].get<std::string>() : record["id"].dump();
  const std::string& source = record["source"].get_ref<const std::string&>();
  if (!reason.empty()) {
    problem(Problem::invalid, id, source, reason, record);
    return;
  }
  std::string line;
  try {
    line = record.dump();
  } catch (const json::exception&) {
    problem(Problem::invalid, id, source, "the record holds text that is not valid UTF-8", record);
    return;
  }
  out_.write_line(line);
  ++current().written;
  ++summary_.written;
}

void Sink::problem(Problem kind, std::string_view id, std::string_view source, const std::string& reason,
                   const json& data) {
  bool skip = kind == Problem::missing_field ? opt_.skip_missing : opt_.skip_invalid;
  if (!skip || !rejects_) {
    const char* hint = kind == Problem::missing_field
                           ? " (pass --skip-missing to send such rows to the rejects file instead)"
                           : " (pass --skip-invalid to send such records to the rejects file instead)";
    throw Error(std::string(source) + ": " + reason + hint);
  }
  json r = {{"id", std::string(id)},
            {"source", std::string(source)},
            {"stage", "ingest"},
            {"reason", reason},
            {"data", data}};
  rejects_->write_line(dump_lenient(r));
  ++current().rejected;
  ++summary_.rejected;
}

// ---- rows ----

ColumnShape shape_from_columns(const std::vector<std::string_view>& names) {
  auto has = [&](std::string_view n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  if (has("messages")) return ColumnShape::messages;
  if (has("instruction") && has("output")) return ColumnShape::alpaca;
  if (has("text")) return ColumnShape::text;
  return ColumnShape::lines;
}

RowConverter::RowConverter(const IngestOptions& opt, Sink& sink) : opt_(opt), sink_(sink) {
  if (!opt.text_template.empty()) text_ = RowTemplate(opt.text_template, "--template");
  if (!opt.instruction_template.empty())
    instruction_ = RowTemplate(opt.instruction_template, "--instruction-template");
  if (!opt.input_template.empty()) input_ = RowTemplate(opt.input_template, "--input-template");
  if (!opt.output_template.empty()) output_ = RowTemplate(opt.output_template, "--output-template");
  has_templates_ = !text_.empty() || !instruction_.empty();
}

void RowConverter::set_columns(const std::vector<std::string>& columns, const std::string& source_name) {
  columns_ = columns;
  for (size_t i = 0; i < columns_.size(); ++i) {
    columns_[i] = util::trim(columns_[i]);
    if (columns_[i].empty()) columns_[i] = "column " + std::to_string(i + 1);
  }
  column_views_.assign(columns_.begin(), columns_.end());
  fixed_shape_ = shape_from_columns(column_views_);
  auto resolve = [&](const RowTemplate& t, const char* option, std::vector<size_t>& idx) {
    idx.clear();
    for (const auto& f : t.fields()) {
      size_t n = std::count(columns_.begin(), columns_.end(), f);
      if (n == 0) {
        std::string list = util::join(columns_, ", ");
        if (list.size() > 200) list = list.substr(0, 200) + "...";
        std::string near = util::closest_match(f, columns_);
        throw Error(source_name + " has no column '" + f + "' used in " + option + " (columns: " + list +
                    ")" + (near.empty() ? "" : "; did you mean '" + near + "'?"));
      }
      if (n > 1)
        throw Error(source_name + " has " + std::to_string(n) + " columns named '" + f + "' used in " +
                    option + "; rename them so the template is unambiguous");
      idx.push_back(std::find(columns_.begin(), columns_.end(), f) - columns_.begin());
    }
  };
  if (!text_.empty()) resolve(text_, "--template", text_idx_);
  if (!instruction_.empty()) resolve(instruction_, "--instruction-template", instruction_idx_);
  if (!input_.empty()) resolve(input_, "--input-template", input_idx_);
  if (!output_.empty()) resolve(output_, "--output-template", output_idx_);
}

json RowConverter::row_json(const std::vector<std::string_view>& names,
                            const std::vector<std::string_view>& values,
                            const std::vector<char>& null) const {
  json row = json::object();
  for (size_t i = 0; i < values.size(); ++i) {
    std::string key = i < names.size() ? std::string(names[i]) : "extra field " + std::to_string(i + 1);
    row[key] = null[i] ? json(nullptr) : json(std::string(values[i]));
  }
  return row;
}

bool RowConverter::render(const RowTemplate& t, const std::vector<size_t>* idx,
                          const std::vector<std::string_view>& names,
                          const std::vector<std::string_view>& values, const std::vector<char>& null,
                          std::string& out, std::string& missing) {
  field_values_.clear();
  for (size_t f = 0; f < t.fields().size(); ++f) {
    size_t i;
    if (idx) {
      i = (*idx)[f];
    } else {
      i = std::find(names.begin(), names.end(), t.fields()[f]) - names.begin();
    }
    if (i >= values.size() || null[i]) {
      missing = t.fields()[f];
      return false;
    }
    field_values_.push_back(values[i]);
  }
  t.render(out, field_values_);
  return true;
}

static bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

void RowConverter::convert(const std::vector<std::string_view>* names_in,
                           const std::vector<std::string_view>& values, const std::vector<char>& null,
                           std::string_view id, std::string_view source) {
  const std::vector<std::string_view>& names = names_in ? *names_in : column_views_;
  bool any = false;
  for (size_t i = 0; i < values.size() && !any; ++i) any = !null[i] && !values[i].empty();
  if (!any) {
    sink_.empty();
    return;
  }
  auto invalid = [&](const std::string& reason) {
    sink_.problem(Problem::invalid, id, source, reason, row_json(names, values, null));
  };
  if (!names_in && values.size() > names.size() &&
      std::any_of(values.begin() + names.size(), values.end(),
                  [](std::string_view v) { return !v.empty(); })) {
    invalid("the row has " + std::to_string(values.size()) + " fields but the header has " +
            std::to_string(names.size()));
    return;
  }
  const bool fixed = names_in == nullptr;
  std::string missing;
  auto put = [&](std::string& b, const char* key, std::string_view v) {
    b.append(key);
    if (!append_json_string(b, v)) {
      sink_.rollback();
      invalid("the value for '" + std::string(key + 2, std::strlen(key) - 4) +
              "' is not valid UTF-8 (pass --encoding with the file's encoding, e.g. --encoding gb18030)");
      return false;
    }
    return true;
  };

  if (has_templates_) {
    if (!text_.empty()) {
      scratch_.clear();
      if (!render(text_, fixed ? &text_idx_ : nullptr, names, values, null, scratch_, missing)) {
        sink_.problem(Problem::missing_field, id, source, "no value for template field '" + missing + "'",
                      row_json(names, values, null));
        return;
      }
      if (blank(scratch_)) return invalid("--template gives empty text for this row");
      std::string& b = sink_.begin(id, source);
      if (put(b, ",\"text\":", scratch_)) sink_.commit();
      return;
    }
    std::string ins, inp, out;
    if (!render(instruction_, fixed ? &instruction_idx_ : nullptr, names, values, null, ins, missing) ||
        (!input_.empty() &&
         !render(input_, fixed ? &input_idx_ : nullptr, names, values, null, inp, missing)) ||
        !render(output_, fixed ? &output_idx_ : nullptr, names, values, null, out, missing)) {
      sink_.problem(Problem::missing_field, id, source, "no value for template field '" + missing + "'",
                    row_json(names, values, null));
      return;
    }
    if (blank(ins)) return invalid("--instruction-template gives an empty instruction for this row");
    if (blank(out)) return invalid("--output-template gives an empty output for this row");
    std::string& b = sink_.begin(id, source);
    if (put(b, ",\"instruction\":", ins) && put(b, ",\"input\":", inp) && put(b, ",\"output\":", out))
      sink_.commit();
    return;
  }

  ColumnShape shape = fixed ? fixed_shape_ : shape_from_columns(names);
  auto value_of = [&](std::string_view col, bool& present) -> std::string_view {
    size_t i = std::find(names.begin(), names.end(), col) - names.begin();
    present = i < values.size() && !null[i];
    return present ? values[i] : std::string_view();
  };
  switch (shape) {
    case ColumnShape::lines: {
      // "column: value" lines, one per non-empty column, in column order.
      scratch_.clear();
      for (size_t i = 0; i < values.size(); ++i) {
        if (null[i] || values[i].empty()) continue;
        if (!scratch_.empty()) scratch_.push_back('\n');
        scratch_.append(names[i]);
        scratch_.append(": ");
        scratch_.append(values[i]);
      }
      std::string& b = sink_.begin(id, source);
      if (put(b, ",\"text\":", scratch_)) sink_.commit();
      return;
    }
    case ColumnShape::text: {
      bool present;
      std::string_view t = value_of("text", present);
      if (!present || blank(t)) return invalid("column 'text' is empty");
      std::string& b = sink_.begin(id, source);
      if (put(b, ",\"text\":", t)) sink_.commit();
      return;
    }
    case ColumnShape::alpaca: {
      bool p1, p2, p3;
      std::string_view ins = value_of("instruction", p1), inp = value_of("input", p2),
                       out = value_of("output", p3);
      if (!p1 || blank(ins)) return invalid("column 'instruction' is empty");
      if (!p3 || blank(out)) return invalid("column 'output' is empty");
      std::string& b = sink_.begin(id, source);
      if (put(b, ",\"instruction\":", ins) && put(b, ",\"input\":", inp) && put(b, ",\"output\":", out))
        sink_.commit();
      return;
    }
    case ColumnShape::messages: {
      bool present;
      std::string_view m = value_of("messages", present);
      if (!present) return invalid("column 'messages' is empty");
      json msgs;
      try {
        msgs = json::parse(m.begin(), m.end());
      } catch (const json::exception&) {
        return invalid("column 'messages' is not a JSON array of {\"role\", \"content\"} objects");
      }
      json rec = {{"id", std::string(id)}, {"source", std::string(source)}, {"messages", std::move(msgs)}};
      sink_.write_validated(rec);
      return;
    }
  }
}

}  // namespace dsft::data::ingest
