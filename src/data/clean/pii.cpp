// Personal-data detection (see include/dsft/data/pii.h). One Hyperscan database holds every
// candidate pattern (start-of-match enabled); a candidate becomes a span only when its
// validator accepts it: checksum, Luhn, calendar date, octet range, area-code rules and the
// boundary rule (no ASCII letter or digit right before or after a number).
#include "dsft/data/pii.h"

#include <arpa/inet.h>
#include <hs/hs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <mutex>

#include "dsft/util/error.h"

namespace dsft::data {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// A number may not be glued to a letter or digit, nor be part of a longer decimal, dotted or
// dashed number ("3.13812345678", "2023-13812345678").
bool number_left_ok(std::string_view t, size_t b) {
  if (b == 0) return true;
  char p = t[b - 1];
  if (is_alnum(p) || p == '_') return false;
  if ((p == '.' || p == '-' || p == '/' || p == ',') && b >= 2 && is_digit(t[b - 2])) return false;
  return true;
}
bool number_right_ok(std::string_view t, size_t e) {
  if (e >= t.size()) return true;
  char n = t[e];
  if (is_alnum(n) || n == '_') return false;
  if ((n == '.' || n == '-' || n == '/' || n == ',') && e + 1 < t.size() && is_digit(t[e + 1])) return false;
  return true;
}

std::string lowered_window(std::string_view t, size_t b, size_t width) {
  size_t s = b > width ? b - width : 0;
  std::string w(t.substr(s, b - s));
  for (char& c : w) c = lower(c);
  return w;
}

// The last position of any of `words` in `w`, or npos. An ASCII word must start a word
// ("ver" does not match inside "server").
size_t last_of_words(const std::string& w, const std::initializer_list<const char*>& words) {
  size_t best = std::string::npos;
  for (const char* k : words) {
    for (size_t p = w.rfind(k); p != std::string::npos; p = p ? w.rfind(k, p - 1) : std::string::npos) {
      if (p > 0 && is_alpha(k[0]) && is_alpha(w[p - 1])) continue;
      if (best == std::string::npos || p > best) best = p;
      break;
    }
  }
  return best;
}

// Numbers labelled as order, invoice, serial ... numbers right before them are not personal
// data, unless a phone/card/ID label comes closer to the number.
bool negative_context(std::string_view t, size_t b) {
  std::string w = lowered_window(t, b, 30);
  size_t neg = last_of_words(w, {"订单", "单号", "发票", "编号", "流水号", "运单", "工单", "序列号", "批次", "合同号",
                                 "型号", "版本", "学号", "交易号", "条码", "isbn", "issn", "order", "invoice",
                                 "tracking", "serial", "s/n", "sku", "ticket", "ref", "version", "build",
                                 "batch", "model", "transaction", "receipt", "part no", "doi"});
  if (neg == std::string::npos) return false;
  size_t pos = last_of_words(w, {"电话", "手机", "联系", "致电", "拨打", "tel", "phone", "mobile", "call", "fax",
                                 "传真", "卡号", "card", "账号", "银行", "身份证", "contact"});
  return pos == std::string::npos || pos < neg;
}

std::string digits_of(std::string_view s) {
  std::string d;
  for (char c : s)
    if (is_digit(c)) d.push_back(c);
  return d;
}

bool all_same(std::string_view d) {
  return !d.empty() && std::all_of(d.begin(), d.end(), [&](char c) { return c == d[0]; });
}

int current_year() {
  static const int year = [] {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    return tm.tm_year + 1900;
  }();
  return year;
}

bool valid_date(int y, int m, int d) {
  if (m < 1 || m > 12 || d < 1) return false;
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int dm = days[m - 1];
  if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) dm = 29;
  return d <= dm;
}

int num(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

bool cn_province_valid(int p) {
  static const int codes[] = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42,
                              43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91};
  return std::find(std::begin(codes), std::end(codes), p) != std::end(codes);
}

// 18 digits with a province code and a plausible birth date in positions 7-14: a resident ID
// shape, whatever its check character says.
bool cn_id_shaped(std::string_view d) {
  if (d.size() != 18) return false;
  for (size_t i = 0; i < 17; ++i)
    if (!is_digit(d[i])) return false;
  int y = num(d.substr(6, 4));
  return cn_province_valid(num(d.substr(0, 2))) && y >= 1900 && y <= current_year() &&
         valid_date(y, num(d.substr(10, 2)), num(d.substr(12, 2)));
}

bool plausible_iin(std::string_view d) {
  size_t n = d.size();
  if (n < 13 || n > 19) return false;
  int p2 = num(d.substr(0, 2)), p4 = num(d.substr(0, 4));
  switch (d[0]) {
    case '4': return n == 13 || n == 16 || n == 19;
    case '3':
      if (p2 == 34 || p2 == 37) return n == 15;
      if (p2 == 36 || p2 == 38 || p2 == 39 || (p4 >= 3000 && p4 <= 3059) || p4 == 3095) return n >= 14;
      if (p4 >= 3528 && p4 <= 3589) return n >= 16;
      return false;
    case '5':
      if (p2 >= 51 && p2 <= 55) return n == 16;
      return p2 == 50 || p2 >= 56;  // Maestro
    case '2': return p4 >= 2221 && p4 <= 2720 && n == 16;
    case '6': return n >= 16;       // UnionPay 62, Discover 60/64/65, Chinese bank BINs 60-69
    case '9': return p2 == 95 && n >= 16;  // old domestic cards (9558 ICBC, 9559 ABC)
    default: return false;
  }
}

// ---- validators: each takes the candidate [b, e) and may narrow or move it --------------------

enum class Check : uint8_t {
  email, url_cred, key_token, key_akia, key_bearer, key_assign, key_assign_zh, ipv4, ipv6, id_card,
  bank_card, cn_mobile, landline, intl_phone, nanp_phone, passport, custom
};

bool url_char(char c) {
  return c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != '<' && c != '>' && c != '`' && c != '\\' &&
         c != '{' && c != '}' && c != '|' && c != '^';
}

bool check_email(std::string_view t, size_t& b, size_t& e) {
  size_t at = t.find('@', b);
  if (at == std::string_view::npos || at >= e) return false;
  while (b < at && !is_alnum(t[b])) ++b;  // "..a@b.c": a local part starts with a letter/digit
  std::string_view local = t.substr(b, at - b);
  if (local.empty() || local.size() > 64 || local.back() == '.' || local.find("..") != std::string_view::npos)
    return false;
  std::string_view dom = t.substr(at + 1, e - at - 1);
  if (dom.empty() || dom.size() > 253) return false;
  size_t labels = 0, pos = 0;
  std::string_view last;
  while (pos <= dom.size()) {
    size_t dot = dom.find('.', pos);
    if (dot == std::string_view::npos) dot = dom.size();
    std::string_view label = dom.substr(pos, dot - pos);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    last = label;
    ++labels;
    pos = dot + 1;
  }
  if (labels < 2 || last.size() < 2) return false;
  for (char c : last)
    if (!is_alpha(c)) return false;
  std::string tld;
  for (char c : last) tld.push_back(lower(c));
  // "icon@2x.png" and friends are file names, not addresses.
  static const char* files[] = {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "js", "css", "ts", "tsx",
                                "jsx", "map", "json", "txt", "md", "py", "cpp", "h", "pdf"};
  for (const char* f : files)
    if (tld == f) return false;
  if (e < t.size() && (is_alnum(t[e]) || t[e] == '_' || t[e] == '@')) return false;
  // "scheme://user:pw@host": the '@' of a URL's authority is a credential, not an address.
  for (size_t p = b; p >= 3; --p) {
    char c = t[p - 1];
    if (c == '/' && t[p - 2] == '/' && t[p - 3] == ':') return false;
    if (c == '/' || c == '?' || c == '#' || !url_char(c)) break;
  }
  return true;
}

bool check_url_cred(std::string_view t, size_t& b, size_t& e, bool whole_url) {
  size_t sep = t.find("://", b);
  if (sep == std::string_view::npos || sep >= e) return false;
  while (b < sep && !is_alpha(t[b])) ++b;
  if (b == sep) return false;
  size_t auth = sep + 3, end = auth;
  while (end < t.size() && url_char(t[end])) ++end;
  // Trailing punctuation belongs to the sentence, not the URL.
  while (end > auth && std::strchr(".,;:!?)]", t[end - 1])) --end;
  size_t auth_end = auth;
  while (auth_end < end && t[auth_end] != '/' && t[auth_end] != '?' && t[auth_end] != '#') ++auth_end;
  size_t at = t.rfind('@', auth_end == 0 ? 0 : auth_end - 1);
  if (at == std::string_view::npos || at < auth || at + 1 >= auth_end) return false;
  std::string_view userinfo = t.substr(auth, at - auth);
  size_t colon = userinfo.find(':');
  // "redis://:pw@host" carries a password without a user name.
  if (colon == std::string_view::npos || colon + 1 >= userinfo.size()) return false;
  std::string_view pw = userinfo.substr(colon + 1);
  if (std::all_of(pw.begin(), pw.end(), [](char c) { return c == '*'; })) return false;  // already masked
  if (whole_url) {
    e = end;
  } else {
    b = auth;
    e = at;
  }
  return true;
}

// A token that looks generated: long enough, varied, with a digit or mixed case.
bool looks_random(std::string_view v, size_t min_len) {
  if (v.size() < min_len) return false;
  bool digit = false, up = false, lo = false;
  bool seen[128] = {};
  size_t distinct = 0;
  for (char c : v) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 128 && !seen[u]) {
      seen[u] = true;
      ++distinct;
    }
    digit |= is_digit(c);
    up |= (c >= 'A' && c <= 'Z');
    lo |= (c >= 'a' && c <= 'z');
  }
  if (distinct < std::min<size_t>(8, v.size() / 2)) return false;
  return digit || (up && lo);
}

bool token_char(char c) { return is_alnum(c) || c == '_' || c == '-'; }

bool check_key_token(std::string_view t, size_t& b, size_t& e) {
  if (b > 0 && (is_alnum(t[b - 1]) || t[b - 1] == '_')) return false;
  if (e < t.size() && token_char(t[e])) return false;
  // The body after the well-known prefix ("sk-proj-", "ghp_", "xoxb-" ...) must look generated.
  std::string_view v = t.substr(b, e - b);
  size_t body = 0;
  for (size_t i = 0; i < std::min<size_t>(9, v.size()); ++i)
    if (v[i] == '-' || v[i] == '_') body = i + 1;
  return looks_random(v.substr(body), 12);
}

bool check_akia(std::string_view t, size_t& b, size_t& e) {
  if (b > 0 && is_alnum(t[b - 1])) return false;
  if (e < t.size() && is_alnum(t[e])) return false;
  std::string_view body = t.substr(b + 4, e - b - 4);
  return body.size() == 16 && !all_same(body);
}

bool check_bearer(std::string_view t, size_t& b, size_t& e) {
  if (b > 0 && is_alnum(t[b - 1])) return false;
  size_t v = b + 6;
  while (v < e && (t[v] == ' ' || t[v] == '\t')) ++v;
  if (e < t.size() && (is_alnum(t[e]) || std::strchr("._~+/-=", t[e]))) return false;
  if (!looks_random(t.substr(v, e - v), 16)) return false;
  b = v;
  return true;
}

// A value that is a secret rather than a word, a placeholder or a variable reference.
bool secret_value(std::string_view v) {
  if (v.size() < 6 || all_same(v)) return false;
  std::string l;
  for (char c : v) l.push_back(lower(c));
  static const char* skip[] = {"null", "none", "true", "false", "undefined", "your", "xxxx", "****", "....", "<",
                               "${", "{{", "%(", "(", "[", "environ", "getenv", "process.env", "example.com",
                               "changeme", "placeholder", "redacted"};
  for (const char* s : skip)
    if (l.find(s) != std::string::npos) return false;
  if (v[0] == '$') return false;
  size_t digits = 0, up = 0, lo = 0, sym = 0;
  for (char c : v) {
    digits += is_digit(c);
    up += (c >= 'A' && c <= 'Z');
    lo += (c >= 'a' && c <= 'z');
    sym += !is_alnum(c);
  }
  bool letters = up + lo > 0;
  if (digits && (letters || sym)) return true;             // hunter2go, 9f8e7d..., P@ss-2024
  if (sym && letters && sym < v.size() / 2) return true;   // wJalr/K7M..., pa$$word
  return up >= 2 && lo >= 2 && v.size() >= 10;            // MixedCaseTokenValue (not "Embedding")
}

bool value_char(char c) {
  return c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != ',' && c != ';' && c != '`' && c != ')' &&
         c != '}' && c != ']' && c != '<' && c != '>';
}

// "api_key = ...", "password: '...'", "密钥：..." : the span is the value only.
bool check_assignment(std::string_view t, size_t& b, size_t& e, bool zh) {
  if (!zh && b > 0 && (is_alnum(t[b - 1]))) return false;
  size_t p = b;
  // Skip the key name up to the separator.
  static const std::string_view seps[] = {"=>", ":=", "=", ":", "\xef\xbc\x9a" /*：*/, "\xe6\x98\xaf" /*是*/,
                                          "\xe4\xb8\xba" /*为*/};
  size_t best = std::string_view::npos, best_len = 0;
  for (auto s : seps) {
    size_t q = t.find(s, p);
    if (q != std::string_view::npos && q < e && (best == std::string_view::npos || q < best)) {
      best = q;
      best_len = s.size();
    }
  }
  if (best == std::string_view::npos) return false;
  p = best + best_len;
  while (p < t.size() && (t[p] == ' ' || t[p] == '\t' || t[p] == '"' || t[p] == '\'')) ++p;
  size_t v = p;
  while (p < t.size() && value_char(t[p])) ++p;
  // A value followed by more prose in the same token is not a clean value.
  while (p > v && (t[p - 1] == '.' || t[p - 1] == ':')) --p;
  if (!secret_value(t.substr(v, p - v))) return false;
  b = v;
  e = p;
  return true;
}

bool check_ipv4(std::string_view t, size_t& b, size_t& e) {
  if (b > 0) {
    char p = t[b - 1];
    if (is_alnum(p) || p == '_' || p == '.' || p == '-') return false;
  }
  if (e < t.size()) {
    char n = t[e];
    if (is_alnum(n) || n == '_') return false;
    if ((n == '.' || n == '-') && e + 1 < t.size() && is_digit(t[e + 1])) return false;
  }
  if (!ipv4_valid(t.substr(b, e - b))) return false;
  // "version 1.2.3.4" / "v1.2.3.4" is a version, a bare dotted quad is an address.
  std::string w = lowered_window(t, b, 16);
  if (last_of_words(w, {"version", "ver.", "ver ", "版本", "release", "build", "firmware", "固件", "rev", "第",
                         "section", "chapter", "sec.", "\xc2\xa7" /*§*/}) != std::string::npos)
    return false;
  // "第1.2.3.4条": a numbered clause, not an address.
  static const std::string_view clause[] = {"\xe6\x9d\xa1" /*条*/, "\xe8\x8a\x82" /*节*/, "\xe7\xab\xa0" /*章*/,
                                            "\xe6\xac\xbe" /*款*/};
  for (auto c : clause)
    if (t.substr(e, c.size()) == c) return false;
  return true;
}

bool check_ipv6(std::string_view t, size_t& b, size_t& e) {
  while (e > b && (t[e - 1] == '.' || (t[e - 1] == ':' && !(e - b >= 2 && t[e - 2] == ':')))) --e;
  if (b > 0) {
    char p = t[b - 1];
    if (is_alnum(p) || p == '_' || p == ':' || p == '.') return false;
  }
  if (e < t.size() && (is_alnum(t[e]) || t[e] == '_' || t[e] == ':')) return false;
  std::string_view s = t.substr(b, e - b);
  if (!ipv6_valid(s)) return false;
  bool digit = false;
  size_t groups = 0;
  bool in = false;
  size_t dots = std::count(s.begin(), s.end(), '.');
  for (char c : s) {
    digit |= is_digit(c);
    if (c != ':' && !in) ++groups;
    in = (c != ':');
  }
  if (dots) groups += 1;  // an embedded IPv4 tail counts as two groups
  bool compressed = s.find("::") != std::string_view::npos;
  return digit && (compressed ? groups >= 2 : groups >= 8);
}

bool check_id_card(std::string_view t, size_t& b, size_t& e) {
  if (!number_left_ok(t, b)) return false;
  if (e < t.size() && (is_alnum(t[e]) || t[e] == '_')) return false;
  if (e < t.size() && (t[e] == '.' || t[e] == '-') && e + 1 < t.size() && is_digit(t[e + 1])) return false;
  std::string id;
  std::vector<size_t> seps;
  for (size_t i = b; i < e; ++i) {
    if (is_digit(t[i]) || t[i] == 'X' || t[i] == 'x') {
      id.push_back(t[i]);
    } else {
      seps.push_back(id.size());
    }
  }
  if (!seps.empty() && !(seps.size() == 2 && seps[0] == 6 && seps[1] == 14)) return false;
  return cn_id_valid(id);
}

// Digit groups of a separated number: sizes and the separator characters between them.
struct Groups {
  std::vector<size_t> sizes;
  std::string seps;
};
Groups groups_of(std::string_view s) {
  Groups g;
  size_t run = 0;
  for (char c : s) {
    if (is_digit(c)) {
      ++run;
    } else {
      if (run) g.sizes.push_back(run);
      run = 0;
      g.seps.push_back(c);
    }
  }
  if (run) g.sizes.push_back(run);
  return g;
}

bool check_bank_card(std::string_view t, size_t& b, size_t& e) {
  if (!number_left_ok(t, b) || !number_right_ok(t, e)) return false;
  std::string_view s = t.substr(b, e - b);
  std::string d = digits_of(s);
  if (d.size() < 13 || d.size() > 19 || all_same(d)) return false;
  Groups g = groups_of(s);
  if (g.sizes.size() > 1) {
    for (char c : g.seps)
      if (c != g.seps[0]) return false;
    bool fours = g.sizes[0] == 4;
    for (size_t i = 1; i + 1 < g.sizes.size(); ++i) fours &= g.sizes[i] == 4;
    fours &= g.sizes.back() >= 1 && g.sizes.back() <= 4;
    bool amex = g.sizes.size() == 3 && g.sizes[0] == 4 && g.sizes[1] == 6 && (g.sizes[2] == 5 || g.sizes[2] == 4);
    if (!fours && !amex) return false;
  }
  if (!luhn_valid(d) || !plausible_iin(d) || cn_id_shaped(d)) return false;
  return !negative_context(t, b);
}

// Skips an optional country prefix: "+86", "0086", "(+86)", "+86-" ... Returns the position after
// it (and its separators), or `b` when there is none.
size_t skip_cn_prefix(std::string_view t, size_t b, size_t e) {
  size_t p = b;
  bool paren = false;
  if (p < e && t[p] == '(') {
    paren = true;
    ++p;
  }
  if (p < e && t[p] == '+') {
    ++p;
  } else if (p + 1 < e && t[p] == '0' && t[p + 1] == '0') {
    p += 2;
  } else {
    return b;
  }
  if (p < e && (t[p] == ' ')) ++p;
  if (p + 1 < e && t[p] == '8' && t[p + 1] == '6') {
    p += 2;
  } else {
    return b;
  }
  if (paren) {
    if (p < e && t[p] == ')') {
      ++p;
    } else {
      return b;
    }
  }
  while (p < e && (t[p] == ' ' || t[p] == '-')) ++p;
  return p;
}

bool check_cn_mobile(std::string_view t, size_t& b, size_t& e) {
  if (!number_left_ok(t, b) || !number_right_ok(t, e)) return false;
  size_t p = skip_cn_prefix(t, b, e);
  std::string_view s = t.substr(p, e - p);
  std::string d = digits_of(s);
  if (d.size() != 11 || d[0] != '1' || d[1] < '3') return false;
  Groups g = groups_of(s);
  if (g.sizes.size() == 3) {
    if (!(g.sizes[0] == 3 && g.sizes[1] == 4 && g.sizes[2] == 4) || g.seps[0] != g.seps[1]) return false;
  } else if (g.sizes.size() != 1) {
    return false;
  }
  return !negative_context(t, b);
}

// Chinese (and other "0 + area code") landlines: 010-12345678, (021)87654321, 0755 1234 5678,
// +86 10 12345678, （0755）1234567.
// "0755-88886666-801": an extension after a dash is part of the number.
void take_extension(std::string_view t, size_t& e) {
  if (e + 1 >= t.size() || t[e] != '-' || !is_digit(t[e + 1])) return;
  size_t q = e + 1;
  while (q < t.size() && is_digit(t[q]) && q - e <= 5) ++q;
  if (q - e - 1 <= 5 && (q >= t.size() || !is_alnum(t[q]))) e = q;
}

bool check_landline(std::string_view t, size_t& b, size_t& e) {
  size_t ext_end = e;
  take_extension(t, ext_end);
  if (!number_left_ok(t, b) || !number_right_ok(t, ext_end)) return false;
  size_t p = skip_cn_prefix(t, b, e);
  bool country = p != b;
  std::string_view s = t.substr(p, e - p);
  // Digits and the position (in digits) of each separator.
  std::string d;
  std::vector<size_t> sep_at;
  bool had_paren = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (is_digit(c)) {
      d.push_back(c);
    } else {
      if (c == '(' || c == ')' || static_cast<unsigned char>(c) >= 0x80) had_paren = true;
      if (sep_at.empty() || sep_at.back() != d.size()) sep_at.push_back(d.size());
    }
  }
  if (!sep_at.empty() && sep_at.front() == 0) sep_at.erase(sep_at.begin());  // "(" before the area code
  if (!country && (d.empty() || d[0] != '0')) return false;
  size_t lead = (!d.empty() && d[0] == '0') ? 1 : 0;
  if (d.size() < lead + 2) return false;
  char a0 = d[lead];
  size_t area_len;
  if (a0 == '1') {
    if (d[lead + 1] != '0') return false;
    area_len = 2;
  } else if (a0 == '2') {
    area_len = 2;
  } else if (a0 >= '3' && a0 <= '9') {
    area_len = 3;
  } else {
    return false;
  }
  size_t area_end = lead + area_len;
  if (d.size() <= area_end) return false;
  size_t sub = d.size() - area_end;
  if (sub != 7 && sub != 8) return false;
  // Separators: one after the area code (optional), one inside the subscriber number (3-4/4-4).
  bool sep_after_area = false;
  for (size_t k : sep_at) {
    if (k == area_end) {
      sep_after_area = true;
    } else if (k == area_end + sub - 4) {
      continue;
    } else {
      return false;
    }
  }
  if (!sep_after_area && !had_paren && !country) {
    // A bare run of digits is only a landline when the subscriber part starts as one does.
    if (d[area_end] < '2') return false;
  }
  if (negative_context(t, b)) return false;
  e = ext_end;
  return true;
}

bool check_intl_phone(std::string_view t, size_t& b, size_t& e) {
  if (!number_left_ok(t, b)) return false;
  bool plus = t[b] == '+';
  if (!plus && !(t[b] == '0' && b + 1 < e && t[b + 1] == '0')) return false;
  // Walk the groups, keeping the longest prefix with at most 15 digits.
  size_t p = b + (plus ? 1 : 2);
  size_t digits = 0, best_end = 0, best_digits = 0, n_groups = 0;
  size_t first_group = 0;
  while (p < e) {
    size_t q = p;
    if (t[q] == '(') ++q;
    size_t ds = q;
    while (q < e && is_digit(t[q])) ++q;
    if (q == ds) break;
    size_t gd = q - ds;
    if (q < e && t[q] == ')') ++q;
    if (digits + gd > 15) break;
    digits += gd;
    ++n_groups;
    if (n_groups == 1) first_group = gd;
    if (number_right_ok(t, q) && digits >= 8) {
      best_end = q;
      best_digits = digits;
    }
    if (q < e && (t[q] == ' ' || t[q] == '-' || t[q] == '.')) {
      p = q + 1;
    } else {
      p = q;
      // Groups may touch only across parentheses: "+44 (0)20 ...", "+1(415)555 ...".
      bool joined = p < e && (t[p] == '(' || (t[p - 1] == ')' && is_digit(t[p])));
      if (!joined) break;
    }
  }
  if (!best_end) return false;
  if (n_groups == 1 && best_digits < 10) return false;
  if (!plus && (first_group > 3 || best_digits < 10 || n_groups < 2)) return false;
  e = best_end;
  return !negative_context(t, b);
}

bool check_nanp(std::string_view t, size_t& b, size_t& e) {
  if (!number_left_ok(t, b) || !number_right_ok(t, e)) return false;
  std::string_view s = t.substr(b, e - b);
  std::string d = digits_of(s);
  if (d.size() == 11) {
    if (d[0] != '1') return false;
    d.erase(0, 1);
  }
  if (d.size() != 10) return false;
  bool parens = s.find('(') != std::string_view::npos;
  Groups g = groups_of(s);
  std::string seps;
  for (char c : g.seps)
    if (c != '(' && c != ')' && c != '+') seps.push_back(c);
  if (!parens) {
    // 415-555-2671 / 415.555.2671: both separators alike; spaces only with a plausible area code.
    if (seps.size() < 2 || seps[seps.size() - 1] != seps[seps.size() - 2]) return false;
    if (seps.back() == ' ' && (d[0] < '2' || d[3] < '2')) return false;
  }
  return !negative_context(t, b);
}

bool check_passport(std::string_view t, size_t& b, size_t& e) {
  // The trigger is the keyword; the number follows within a short distance.
  size_t limit = std::min(t.size(), e + 40);
  for (size_t p = e; p < limit; ++p) {
    if (!is_alnum(t[p]) || (p > 0 && is_alnum(t[p - 1]))) continue;
    size_t q = p, letters = 0, digits = 0;
    while (q < t.size() && t[q] >= 'A' && t[q] <= 'Z' && letters < 3) {
      ++q;
      ++letters;
    }
    while (q < t.size() && is_digit(t[q])) {
      ++q;
      ++digits;
    }
    if (q < t.size() && is_alnum(t[q])) continue;
    if ((letters >= 1 && letters <= 2 && digits >= 6 && digits <= 9) || (letters == 0 && digits == 9)) {
      b = p;
      e = q;
      return true;
    }
  }
  return false;
}

struct PatternDef {
  const char* regex;
  unsigned flags;
  PiiKind kind;
  Check check;
};

// Candidate patterns. They are deliberately a little wider than the formats they stand for:
// the validators decide. Assignments match up to the separator only: a catch-all value class
// would multiply the size of the combined automaton.
const PatternDef builtin_patterns[] = {
    {R"([A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24})", 0, PiiKind::email, Check::email},
    {R"([A-Za-z][A-Za-z0-9+.\-]{1,15}://[A-Za-z0-9._~%!$&'()*+,;=\-]*:[A-Za-z0-9._~%!$&'()*+,;=:@\-]*@[A-Za-z0-9.\-\[\]:]+)",
     0, PiiKind::url_credentials, Check::url_cred},
    {R"(sk-(?:proj-|ant-(?:api\d\d-)?|live-)?[A-Za-z0-9_\-]{20,})", 0, PiiKind::api_key, Check::key_token},
    {R"((?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,})", 0, PiiKind::api_key, Check::key_token},
    {R"((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16})", 0, PiiKind::api_key, Check::key_akia},
    {R"(gh[pousr]_[A-Za-z0-9]{30,})", 0, PiiKind::api_key, Check::key_token},
    {R"(github_pat_[A-Za-z0-9_]{40,})", 0, PiiKind::api_key, Check::key_token},
    {R"(glpat-[A-Za-z0-9_\-]{20,})", 0, PiiKind::api_key, Check::key_token},
    {R"(hf_[A-Za-z0-9]{30,})", 0, PiiKind::api_key, Check::key_token},
    {R"(xox[abposr]-[A-Za-z0-9\-]{10,})", 0, PiiKind::api_key, Check::key_token},
    {R"(AIza[0-9A-Za-z_\-]{35})", 0, PiiKind::api_key, Check::key_token},
    {R"(eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,})", 0, PiiKind::api_key, Check::key_token},
    {R"([Bb]earer[ \t]+[A-Za-z0-9._~+/\-]{16,}=*)", 0, PiiKind::api_key, Check::key_bearer},
    {R"((?:api[_\-\s]?key|apikey|api[_\-]?secret|api[_\-]?token|secret[_\-]?key|secret[_\-]?access[_\-]?key|access[_\-]?key(?:[_\-]?id)?|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|client[_\-]?secret|private[_\-]?key|app[_\-]?secret|app[_\-]?key|x-api-key|token|secret|password|passwd|pwd)["']?\s*(?:=>|:=|[:=]))",
     HS_FLAG_CASELESS, PiiKind::api_key, Check::key_assign},
    {"(?:\xe5\xaf\x86\xe9\x92\xa5|\xe7\xa7\x98\xe9\x92\xa5|\xe5\xaf\x86\xe7\xa0\x81|\xe5\x8f\xa3\xe4\xbb\xa4|"
     "\xe4\xbb\xa4\xe7\x89\x8c|API\\s?[Kk]ey)\\s*(?:[:=]|\xef\xbc\x9a|\xe6\x98\xaf|\xe4\xb8\xba)",
     0, PiiKind::api_key, Check::key_assign_zh},  // 密钥 秘钥 密码 口令 令牌 API Key : ： 是 为
    {R"(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})", 0, PiiKind::ip, Check::ipv4},
    {R"([0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*)", 0, PiiKind::ip, Check::ipv6},
    {R"([1-9]\d{5}[ \-]?(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[ \-]?\d{3}[\dXx])", 0,
     PiiKind::id_card, Check::id_card},
    {R"([1-9]\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3})", 0, PiiKind::id_card, Check::id_card},
    {R"([2-69]\d{12,18})", 0, PiiKind::bank_card, Check::bank_card},
    {R"([2-69]\d{3}(?:[ \-]\d{4}){2,3}(?:[ \-]\d{1,4})?)", 0, PiiKind::bank_card, Check::bank_card},
    {R"(3\d{3}[ \-]\d{6}[ \-]\d{4,5})", 0, PiiKind::bank_card, Check::bank_card},
    {R"((?:(?:\+|00) ?86[ \-]?|\(\+?86\) ?)?1[3-9]\d[ \-]?\d{4}[ \-]?\d{4})", 0, PiiKind::phone, Check::cn_mobile},
    {"(?:(?:\\+|00) ?86[ \\-]?\\(?0?\\d{2,3}\\)?[ \\-]?|\\(0\\d{2,3}\\) ?|\xef\xbc\x88" "0\\d{2,3}\xef\xbc\x89 ?|"
     "0\\d{2,3}[ \\-]?)\\d{3,4}[ \\-]?\\d{4}",
     0, PiiKind::phone, Check::landline},
    {R"((?:\+|00)[1-9]\d{0,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6})", 0, PiiKind::phone, Check::intl_phone},
    {R"((?:\+?1[ .\-]?)?(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4})", 0, PiiKind::phone, Check::nanp_phone},
    {"[Pp]assport|PASSPORT|\xe6\x8a\xa4\xe7\x85\xa7", 0, PiiKind::passport, Check::passport},  // 护照
};

}  // namespace

const char* pii_kind_name(PiiKind kind) {
  switch (kind) {
    case PiiKind::url_credentials: return "URL_CREDENTIALS";
    case PiiKind::api_key: return "API_KEY";
    case PiiKind::email: return "EMAIL";
    case PiiKind::id_card: return "ID_CARD";
    case PiiKind::bank_card: return "BANK_CARD";
    case PiiKind::passport: return "PASSPORT";
    case PiiKind::phone: return "PHONE";
    case PiiKind::ip: return "IP";
    case PiiKind::custom: return "CUSTOM";
  }
  return "?";
}

uint64_t PiiCounts::total() const {
  uint64_t t = 0;
  for (auto v : builtin) t += v;
  for (auto v : custom) t += v;
  return t;
}

void PiiCounts::add(const PiiCounts& o) {
  for (size_t i = 0; i < builtin.size(); ++i) builtin[i] += o.builtin[i];
  if (custom.size() < o.custom.size()) custom.resize(o.custom.size());
  for (size_t i = 0; i < o.custom.size(); ++i) custom[i] += o.custom[i];
}

bool luhn_valid(std::string_view d) {
  if (d.empty()) return false;
  int sum = 0;
  bool dbl = false;
  for (size_t i = d.size(); i-- > 0;) {
    if (!is_digit(d[i])) return false;
    int v = d[i] - '0';
    if (dbl) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
    dbl = !dbl;
  }
  return sum % 10 == 0;
}

bool cn_id_valid(std::string_view id) {
  if (id.size() == 18) {
    for (size_t i = 0; i < 17; ++i)
      if (!is_digit(id[i])) return false;
    if (!is_digit(id[17]) && id[17] != 'X' && id[17] != 'x') return false;
    if (!cn_id_shaped(id)) return false;
    static const int w[] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (size_t i = 0; i < 17; ++i) sum += (id[i] - '0') * w[i];
    char want = "10X98765432"[sum % 11];
    char got = id[17] == 'x' ? 'X' : id[17];
    return want == got;
  }
  if (id.size() == 15) {
    for (char c : id)
      if (!is_digit(c)) return false;
    return cn_province_valid(num(id.substr(0, 2))) &&
           valid_date(1900 + num(id.substr(6, 2)), num(id.substr(8, 2)), num(id.substr(10, 2)));
  }
  return false;
}

bool ipv4_valid(std::string_view s) {
  int parts = 0;
  size_t p = 0;
  while (p <= s.size()) {
    size_t dot = s.find('.', p);
    if (dot == std::string_view::npos) dot = s.size();
    std::string_view o = s.substr(p, dot - p);
    if (o.empty() || o.size() > 3) return false;
    for (char c : o)
      if (!is_digit(c)) return false;
    if (o.size() > 1 && o[0] == '0') return false;  // "01.02.03.04" is a date or a numbering
    if (num(o) > 255) return false;
    ++parts;
    p = dot + 1;
  }
  return parts == 4;
}

bool ipv6_valid(std::string_view s) {
  if (s.size() < 2 || s.size() > 45) return false;
  char buf[64];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = 0;
  unsigned char out[16];
  return inet_pton(AF_INET6, buf, out) == 1;
}

// ---- the scanner ------------------------------------------------------------------------------

struct PiiScanner::Impl {
  hs_database_t* db = nullptr;
  hs_scratch_t* proto = nullptr;
  std::vector<PiiKind> kinds;
  std::vector<Check> checks;
  std::vector<uint16_t> custom_index;
  std::vector<std::string> names;  // placeholder names: built-ins then custom
  uint64_t generation = 0;
};

namespace {
std::atomic<uint64_t> next_generation{1};

struct Match {
  unsigned id;
  size_t from, to;
};

// Per-thread Hyperscan scratch, cloned from the scanner that last used this thread.
struct ThreadScratch {
  uint64_t generation = 0;
  hs_scratch_t* scratch = nullptr;
  std::vector<Match> matches;
  ~ThreadScratch() {
    if (scratch) hs_free_scratch(scratch);
  }
};
thread_local ThreadScratch tls_scratch;

int on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned, void* ctx) {
  auto* v = static_cast<std::vector<Match>*>(ctx);
  if (v->size() < 200000) v->push_back({id, static_cast<size_t>(from), static_cast<size_t>(to)});
  return 0;
}
}  // namespace

PiiScanner::PiiScanner(PiiOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  std::vector<std::string> exprs;
  std::vector<unsigned> flags, ids;
  for (size_t k = 0; k < n_builtin_pii_kinds; ++k) impl_->names.push_back(pii_kind_name(static_cast<PiiKind>(k)));
  for (const auto& p : builtin_patterns) {
    if (!options_.enabled[static_cast<size_t>(p.kind)]) continue;
    ids.push_back(static_cast<unsigned>(exprs.size()));
    exprs.push_back(p.regex);
    flags.push_back(p.flags | HS_FLAG_SOM_LEFTMOST);
    impl_->kinds.push_back(p.kind);
    impl_->checks.push_back(p.check);
    impl_->custom_index.push_back(0);
  }
  for (size_t i = 0; i < options_.custom.size(); ++i) {
    const auto& c = options_.custom[i];
    if (c.name.empty() || !std::all_of(c.name.begin(), c.name.end(), [](char ch) {
          return (ch >= 'A' && ch <= 'Z') || is_digit(ch) || ch == '_';
        }))
      throw Error("PII pattern name '" + c.name + "' must be upper-case letters, digits or '_' (e.g. EMPLOYEE_ID)");
    impl_->names.push_back(c.name);
    ids.push_back(static_cast<unsigned>(exprs.size()));
    exprs.push_back(c.regex);
    flags.push_back(HS_FLAG_SOM_LEFTMOST);
    impl_->kinds.push_back(PiiKind::custom);
    impl_->checks.push_back(Check::custom);
    impl_->custom_index.push_back(static_cast<uint16_t>(i));
  }
  impl_->generation = next_generation++;
  if (exprs.empty()) return;
  std::vector<const char*> cexprs;
  for (auto& e : exprs) cexprs.push_back(e.c_str());
  hs_compile_error_t* err = nullptr;
  if (hs_compile_multi(cexprs.data(), flags.data(), ids.data(), static_cast<unsigned>(exprs.size()),
                       HS_MODE_BLOCK, nullptr, &impl_->db, &err) != HS_SUCCESS) {
    std::string msg = err && err->message ? err->message : "unknown error";
    int which = err ? err->expression : -1;
    hs_free_compile_error(err);
    size_t n_builtin = exprs.size() - options_.custom.size();
    if (which >= 0 && static_cast<size_t>(which) >= n_builtin) {
      const auto& c = options_.custom[which - n_builtin];
      throw Error("PII pattern " + c.name + "='" + c.regex + "' does not compile: " + msg +
                  " (lookaround and backreferences are not supported)");
    }
    throw Error("the built-in PII patterns do not compile: " + msg);
  }
  if (hs_alloc_scratch(impl_->db, &impl_->proto) != HS_SUCCESS) {
    hs_free_database(impl_->db);
    throw Error("cannot allocate Hyperscan scratch space for the PII patterns");
  }
}

PiiScanner::~PiiScanner() {
  if (impl_->proto) hs_free_scratch(impl_->proto);
  if (impl_->db) hs_free_database(impl_->db);
}

const std::string& PiiScanner::name_of(const PiiSpan& s) const {
  if (s.kind == PiiKind::custom) return impl_->names[n_builtin_pii_kinds + s.custom_index];
  return impl_->names[static_cast<size_t>(s.kind)];
}

std::vector<std::string> PiiScanner::kind_names() const { return impl_->names; }

std::vector<PiiSpan> PiiScanner::find(std::string_view text) const {
  std::vector<PiiSpan> spans;
  if (!impl_->db || text.empty()) return spans;
  auto& ts = tls_scratch;
  if (ts.generation != impl_->generation || !ts.scratch) {
    if (ts.scratch) hs_free_scratch(ts.scratch);
    ts.scratch = nullptr;
    if (hs_clone_scratch(impl_->proto, &ts.scratch) != HS_SUCCESS) throw Error("cannot clone Hyperscan scratch");
    ts.generation = impl_->generation;
  }
  auto& m = ts.matches;
  m.clear();
  // Hyperscan takes an unsigned length; texts beyond 4 GiB do not reach here (records are lines).
  if (hs_scan(impl_->db, text.data(), static_cast<unsigned>(text.size()), 0, ts.scratch, on_match, &m) !=
      HS_SUCCESS)
    throw Error("PII scan failed");
  // Per (pattern, start): try the longest end first, then shorter ones, until one validates.
  std::sort(m.begin(), m.end(), [](const Match& a, const Match& b) {
    if (a.id != b.id) return a.id < b.id;
    if (a.from != b.from) return a.from < b.from;
    return a.to > b.to;
  });
  size_t i = 0;
  while (i < m.size()) {
    size_t j = i;
    while (j < m.size() && m[j].id == m[i].id && m[j].from == m[i].from) ++j;
    Check check = impl_->checks[m[i].id];
    size_t tries = 0;
    for (size_t k = i; k < j && tries < 6; ++k, ++tries) {
      size_t b = m[k].from, e = m[k].to;
      bool ok = false;
      switch (check) {
        case Check::email: ok = check_email(text, b, e); break;
        case Check::url_cred: ok = check_url_cred(text, b, e, options_.mask_whole_url); break;
        case Check::key_token: ok = check_key_token(text, b, e); break;
        case Check::key_akia: ok = check_akia(text, b, e); break;
        case Check::key_bearer: ok = check_bearer(text, b, e); break;
        case Check::key_assign: ok = check_assignment(text, b, e, false); break;
        case Check::key_assign_zh: ok = check_assignment(text, b, e, true); break;
        case Check::ipv4: ok = check_ipv4(text, b, e); break;
        case Check::ipv6: ok = check_ipv6(text, b, e); break;
        case Check::id_card: ok = check_id_card(text, b, e); break;
        case Check::bank_card: ok = check_bank_card(text, b, e); break;
        case Check::cn_mobile: ok = check_cn_mobile(text, b, e); break;
        case Check::landline: ok = check_landline(text, b, e); break;
        case Check::intl_phone: ok = check_intl_phone(text, b, e); break;
        case Check::nanp_phone: ok = check_nanp(text, b, e); break;
        case Check::passport: ok = check_passport(text, b, e); break;
        case Check::custom: ok = e > b; break;
      }
      if (ok && e > b) {
        spans.push_back({b, e, impl_->kinds[m[i].id], impl_->custom_index[m[i].id]});
        break;
      }
    }
    i = j;
  }
  if (spans.empty()) return spans;
  // Merge overlaps: the union is masked, under the kind with the highest priority.
  std::sort(spans.begin(), spans.end(), [](const PiiSpan& a, const PiiSpan& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end > b.end;
  });
  std::vector<PiiSpan> merged;
  for (const auto& s : spans) {
    if (!merged.empty() && s.begin < merged.back().end) {
      auto& cur = merged.back();
      // The kind of the longer span wins; on equal length the higher-priority kind.
      size_t cur_len = cur.end - cur.begin, s_len = s.end - s.begin;
      if (s_len > cur_len || (s_len == cur_len && s.kind < cur.kind)) {
        cur.kind = s.kind;
        cur.custom_index = s.custom_index;
      }
      cur.end = std::max(cur.end, s.end);
    } else {
      merged.push_back(s);
    }
  }
  return merged;
}

std::string PiiScanner::mask(std::string_view text, PiiCounts* counts) const {
  auto spans = find(text);
  if (spans.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (const auto& s : spans) {
    out.append(text.substr(pos, s.begin - pos));
    out.push_back('[');
    out.append(name_of(s));
    out.push_back(']');
    pos = s.end;
    if (counts) {
      if (s.kind == PiiKind::custom) {
        if (counts->custom.size() <= s.custom_index) counts->custom.resize(s.custom_index + 1);
        ++counts->custom[s.custom_index];
      } else {
        ++counts->builtin[static_cast<size_t>(s.kind)];
      }
    }
  }
  out.append(text.substr(pos));
  return out;
}

}  // namespace dsft::data
