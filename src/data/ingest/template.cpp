// Row templates: '产品{id}的规格是{spec}' with {column} placeholders and {{ }} escapes.
#include "dsft/data/ingest_text.h"
#include "dsft/util/error.h"

namespace dsft::data {

RowTemplate::RowTemplate(const std::string& text, const std::string& option) : text_(text) {
  std::string literal;
  auto flush = [&] {
    if (!literal.empty()) parts_.push_back({false, std::move(literal), 0});
    literal.clear();
  };
  for (size_t i = 0; i < text.size();) {
    char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      literal.push_back('{');
      i += 2;
    } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      literal.push_back('}');
      i += 2;
    } else if (c == '{') {
      size_t close = text.find_first_of("{}", i + 1);
      if (close == std::string::npos || text[close] != '}')
        throw UsageError(option + " '" + text + "': the '{' at position " + std::to_string(i) +
                         " is never closed (write {{ for a literal brace)");
      std::string name = text.substr(i + 1, close - i - 1);
      if (name.empty())
        throw UsageError(option + " '" + text + "' has an empty placeholder {} (write {column_name})");
      flush();
      size_t idx = 0;
      while (idx < fields_.size() && fields_[idx] != name) ++idx;
      if (idx == fields_.size()) fields_.push_back(name);
      parts_.push_back({true, {}, idx});
      i = close + 1;
    } else if (c == '}') {
      throw UsageError(option + " '" + text + "' has a lone '}' at position " + std::to_string(i) +
                       " (write }} for a literal brace)");
    } else {
      literal.push_back(c);
      ++i;
    }
  }
  flush();
  if (parts_.empty()) throw UsageError(option + " is empty");
}

void RowTemplate::render(std::string& out, const std::vector<std::string_view>& values) const {
  for (const Part& p : parts_) {
    if (p.is_field)
      out.append(values[p.field]);
    else
      out.append(p.literal);
  }
}

}  // namespace dsft::data
