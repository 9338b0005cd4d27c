// The Jinja interpreter against jinja2 3.1 (ImmutableSandboxedEnvironment, trim_blocks,
// lstrip_blocks, loopcontrols, transformers' tojson): each expected string below is what jinja2
// rendered for the template with the `messages` shown, so lexer whitespace rules, operator
// precedence, filters, tests, loops and Python value printing are all pinned to the reference.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dsft/util/error.h"
#include "text/jinja.h"

using dsft::text::jinja::Template;
using dsft::text::jinja::Value;

namespace {

std::map<std::string, Value> vars() {
  auto messages = nlohmann::ordered_json::parse(R"([{"role": "system", "content": "sys"},
    {"role": "user", "content": " hi  "}, {"role": "assistant", "content": "<think>r</think>\n\nok"},
    {"role": "user", "content": "q2"}])");
  return {{"messages", Value::from_json(messages)}};
}

const std::vector<std::pair<const char*, const char*>> kCases = {
    {"a  \n  {% if true %}\n  x\n  {% endif %}  \n  {{ 1 }}  {% if true %}y{% endif %}\nz",
     "a  \n  x\n  \n  1  yz"},
    {"  {#- c -#}  y\n",
     "y"},
    {"x\n{# c #}\ny\n  {# d #}\nz",
     "x\ny\nz"},
    {"{% for m in messages %}\n  {{- m.role }}\n{% endfor %}\n",
     "system\nuser\nassistant\nuser\n"},
    {"{%- for m in messages -%}\n  [{{ m.role }}]\n{%- endfor -%}\n\nend",
     "[system][user][assistant][user]end"},
    {"{% raw %}{{ x }}{% endraw %}|{%- raw -%}  {% y %}  {%- endraw -%}|",
     "{{ x }}|{% y %}|"},
    {"{{ 1 if false }}|{{ (1 if false) is defined }}|{{ 'a' if x is none else 'b' }}",
     "|False|b"},
    {"{% set x %}inner {{ 1 + 2 }}{% endset %}[{{ x }}]",
     "[inner 3]"},
    {"{% for a, b in [[1,2],[3,4]] %}{{ a }}{{ b }},{% endfor %}",
     "12,34,"},
    {"{% for i in range(5) if i is odd %}{{ i }}{{ loop.length }}{% else %}none{% endfor %}",
     "1232"},
    {"{% for i in range(10) %}{% if i == 3 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
     "01245"},
    {"{{ messages|length }} {{ messages[-1].content }} {{ messages[1:3]|map(attribute='role')|join(',') }}",
     "4 q2 user,assistant"},
    {"{{ messages|selectattr('role','equalto','user')|list|length }} {{ messages|rejectattr('role','eq','user')|map(attribute='role')|list }}",
     "2 ['system', 'assistant']"},
    {"{{ {'a':1,'b':[1,2.5,none,true,'é\\n\"']}|tojson }} {{ [1,{'x':'y'}]|tojson(indent=2) }} {{ {'b':1,'a':2}|tojson(sort_keys=true) }}",
     "{\"a\": 1, \"b\": [1, 2.5, null, true, \"é\\n\\\"\"]} [\n  1,\n  {\n    \"x\": \"y\"\n  }\n] {\"a\": 2, \"b\": 1}"},
    {"{{ 'Hello World'|lower }} {{ 'hello'|upper }} {{ 'héllo wörld'|title }} {{ '  x  '|trim }} {{ 'xxaxx'|trim('x') }}",
     "hello world HELLO Héllo Wörld x a"},
    {"{{ ' a b '.split() }} {{ 'a  b'.split(' ') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}",
     "['a', 'b'] ['a', '', 'b'] ['a', 'b,c'] ['a,b', 'c']"},
    {"{{ 'abc'.startswith(('x','a')) }} {{ 'abc'.endswith('bc') }} {{ 'aXbXc'.replace('X','-',1) }} {{ 'abc'.find('c') }}",
     "True True a-bXc 2"},
    {"{{ x|default('d') }} {{ none|default('d') }} {{ ''|default('d', true) }} {{ x|d('e') }}",
     "d None d e"},
    {"{{ 1/2 }} {{ 4/2 }} {{ 7//2 }} {{ -7//2 }} {{ 7%3 }} {{ -7 % 3 }} {{ 2**10 }} {{ 1.5*2 }} {{ 'ab'*3 }} {{ [1]*2 }}",
     "0.5 2.0 3 -4 1 2 1024 3.0 ababab [1, 1]"},
    {"{{ 1e20 }} {{ 1.0 }} {{ 0.1+0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 123.456 }} {{ 1e15 }} {{ 0.0001 }} {{ -2.5 }}",
     "1e+20 1.0 0.30000000000000004 1e+16 1e-05 123.456 1000000000000000.0 0.0001 -2.5"},
    {"{{ [1,'a',none,true,1.5,('x',)] }} {{ {'a':\"it's\"} }} {{ ['a\"b'] }} {{ ['x\\ny'] }}",
     "[1, 'a', None, True, 1.5, ('x',)] {'a': \"it's\"} ['a\"b'] ['x\\ny']"},
    {"{{ 'é'|length }} {{ 'héllo'[1] }} {{ 'héllo'[::-1] }} {{ 'héllo'[1:3] }} {{ [1,2,3,4,5][::2] }} {{ [1,2,3][-2:] }} {{ [1,2,3][5] is defined }}",
     "1 é olléh él [1, 3, 5] [2, 3] False"},
    {"{{ 1 == 1.0 }} {{ true == 1 }} {{ x == y }} {{ none == x }} {{ 'a' < 'b' }} {{ [1,2] < [1,3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}",
     "True True True False True True True False"},
    {"{{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.0 is float }} {{ {} is mapping }} {{ 's' is string }} {{ [] is sequence }} {{ 's' is iterable }} {{ 5 is divisibleby 5 }} {{ 2 is even }} {{ false is false }} {{ 0 is false }} {{ 3 is in [1,3] }} {{ 'a' is lower }}",
     "False True True True True False True True True True True True True True False True True"},
    {"{{ 'a' ~ 1 ~ none ~ x }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ -3|abs }} {{ 3.7|int }} {{ '42'|int }} {{ 'x'|int }} {{ 2|float }} {{ 2.567|round(1) }}",
     "a1None ab [1, 2] 3 3 42 0 2.0 2.6"},
    {"{% set ns = namespace(a=1) %}{% for i in [1,2] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}",
     "4"},
    {"{% set x = 0 %}{% for i in [1,2,3] %}{{x}}{% set x = x + i %}{{x}};{% endfor %}{{x}}",
     "01;02;03;0"},
    {"{% for k, v in {'b':1,'a':2}.items() %}{{k}}={{v}} {% endfor %}{{ {'a':1}.get('b') }} {{ {'a':1}.get('b', 2) }} {{ {'a':1}.keys()|list }}",
     "b=1 a=2 None 2 ['a']"},
    {"{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem.role if loop.previtem is defined }}{{ loop.cycle('a','b') }} {% endfor %}",
     "104TrueFalse4a 213FalseFalse4systemb 322FalseFalse4usera 431FalseTrue4assistantb "},
    {"{{ messages[0]['content'] }} {{ messages[0].content }} {{ messages.0.role }} {{ messages[-1]['role'] }}",
     "sys sys system user"},
    {"{{ [3,1,2]|sort }} {{ [3,1,2]|sort(reverse=true) }} {{ [1,2,3]|sum }} {{ [1,2,2,3]|unique|list }} {{ [1,5,3]|max }} {{ [1,5,3]|min }} {{ 'abc'|list }} {{ [1,2]|first }} {{ [1,2]|last }} {{ [1,2]|reverse|list }}",
     "[1, 2, 3] [3, 2, 1] 6 [1, 2, 3] 5 1 ['a', 'b', 'c'] 1 2 [2, 1]"},
    {"{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}",
     "a\n  b\n\n  c|  a\n  b"},
    {"{{ '\\u00e9\\x41\\n\\q\\t|\\'' }} {{ \"a\" 'b' }}",
     "éA\n\\q\t|' ab"},
    {"{{ 'it''s' }}",
     "its"},
    {"{%- if true -%}\n\n  a  \n\n{%- endif -%}\n\nb",
     "ab"},
    {"{%+ if true %}  x{% endif %}\n  {%+ if true %}y\n{% endif %}",
     "  x  y\n"},
    {"{% if true +%}\nkeep\n{% endif %}",
     "\nkeep\n"},
    {"{{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }} {{ not true or true }} {{ not (true and false) }} {{ 1 in [1] and 2 not in [1] }}",
     "5 64 True True True"},
    {"{{ -1 }} {{ - 2 + 3 }} {{ -(2 + 3) }} {{ (1, 2) }} {{ () }}",
     "-1 1 -5 (1, 2) ()"},
    {"{{ 'abc' is string and 'b' in 'abc' }} {{ 'x' not in 'abc' }} {{ 'a' in {'a':1} }} {{ 1 in {'a':1} }}",
     "True True True False"},
    {"{{ messages|map('upper') is defined }} {{ ['a','b']|map('upper')|list }} {{ [' a ']|map('trim')|join }}",
     "True ['A', 'B'] a"},
    {"{{ {'a': none}.a is none }} {{ {'a': none}.b is defined }} {{ messages[0].get('content') }}",
     "True False sys"},
    {"{{ 'A-B'.lower().split('-') }} {{ '  x'.lstrip() }}|{{ 'x  '.rstrip() }}|{{ '\\n\\nx\\n'.strip('\\n') }}|",
     "['a', 'b'] x|x|x|"},
    {"{{ 'Hello'.capitalize() }} {{ 'hELLO wORLD'.capitalize() }} {{ 'ab'.upper() }} {{ 'a b'.title() }} {{ 'abc'.count('b') }}",
     "Hello Hello world AB A B 1"},
    {"{% if messages %}yes{% endif %}{% if [] %}no{% endif %}{% if {} %}no{% endif %}{% if '' %}no{% endif %}{% if 0.0 %}no{% endif %}",
     "yes"},
    {"{{ 3 is sameas 3 }} {{ none is sameas none }} {{ 'x' is eq 'x' }} {{ 2 is gt 1 }} {{ 2 is le 1 }}",
     "True True True True False"},
    {"{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}",
     "12(1, 2)"},
    {"{{ messages | length }}{{ messages | selectattr('content') | list | length }}",
     "44"},
    {"{{ [1,2,3]|join('-') }} {{ messages|join(', ', attribute='role') }}",
     "1-2-3 system, user, assistant, user"},
    {"{{ 'a' | upper | lower ~ 'B' | lower }}",
     "ab"},
    {"{{ {'k': 'v'}|items|list }} {{ x|items|list }}",
     "[('k', 'v')] []"},
    {"{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }}",
     "[0, 1, 2] [1, 3, 5] [5, 3, 1]"},
    {"{{ dict(a=1, b=2) }} {{ namespace(a=1).a }}",
     "{'a': 1, 'b': 2} 1"},
};

}  // namespace

TEST(ChatJinja, MatchesJinja2) {
  for (const auto& [source, want] : kCases) {
    std::string got;
    try {
      got = Template(source, "case").render(vars());
    } catch (const dsft::Error& e) {
      ADD_FAILURE() << "template " << source << " failed: " << e.what();
      continue;
    }
    EXPECT_EQ(got, want) << "template: " << source;
  }
}

// What jinja2 refuses at runtime is refused here too, with the reason in the message.
TEST(ChatJinja, RuntimeErrors) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"{{ x.y }}", "'x' is undefined"},
      {"{{ 'a' + 1 }}", "unsupported operand types for +: 'str' and 'int'"},
      {"{{ none + 'a' }}", "unsupported operand"},
      {"{% for x in none %}{% endfor %}", "not iterable"},
      {"{{ 1 < 'a' }}", "'<' is not supported"},
      {"{{ messages[0].content.nope() }}", "is undefined and cannot be called"},
      {"{% set n = 1 %}{% set n.a = 2 %}", "only namespace() objects"},
      {"{{ 2 ** 70 }}", "integer overflow"},
      {"{{ 1 // 0 }}", "division or modulo by zero"},
      {"{{ '%s' % 1 }}", "printf-style"},
  };
  for (const auto& [source, needle] : cases) {
    try {
      Template(source, "case").render(vars());
      ADD_FAILURE() << "expected an error from " << source;
    } catch (const dsft::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << source << " -> " << e.what();
      EXPECT_NE(std::string(e.what()).find("chat template 'case' line 1"), std::string::npos) << e.what();
    }
  }
}

TEST(ChatJinja, ParseErrorsNameTheProblem) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"{% macro m() %}{% endmacro %}", "'{% macro %}'"},
      {"{% call x() %}{% endcall %}", "'{% call %}'"},
      {"{% for x in y recursive %}{% endfor %}", "recursive"},
      {"{{ x | nosuchfilter }}", "filter 'nosuchfilter'"},
      {"{% if x is nosuchtest %}{% endif %}", "test 'is nosuchtest'"},
      {"{% break %}", "outside a for loop"},
      {"{{ 'unterminated }}", "never closed"},
      {"{# open comment", "never closed"},
      {"{% if true %}x", "ends inside a block"},
      {"{% endif %}", "unknown or misplaced tag"},
      {"{{ f(*args) }}", "*args"},
      {"a\nb\n{{ ) }}", "line 3"},
  };
  for (const auto& [source, needle] : cases) {
    try {
      Template t(source, "case");
      ADD_FAILURE() << "expected a parse error from " << source;
    } catch (const dsft::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << source << " -> " << e.what();
    }
  }
}

// Newlines: \r\n is read as \n and one trailing newline of the source is dropped, as jinja2 does.
TEST(ChatJinja, SourceNewlines) {
  EXPECT_EQ(Template("a\r\nb\rc\n", "t").render({}), "a\nb\nc");
  EXPECT_EQ(Template("a\n\n", "t").render({}), "a\n");
  dsft::text::jinja::Options plain;
  plain.trim_blocks = false;
  plain.lstrip_blocks = false;
  EXPECT_EQ(Template("  {% if true %}\nx{% endif %}\n", "t", plain).render({}), "  \nx");
}
