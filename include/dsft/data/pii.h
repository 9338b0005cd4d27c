// Personal-data detection and masking: emails, phone numbers, Chinese resident ID numbers, bank
// cards, IP addresses, URLs with credentials, API keys, passports and user-defined patterns.
// All patterns are scanned in one Hyperscan pass; each candidate then goes through a validator
// (checksums, Luhn, dates, octets, boundaries) before it is masked.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsft::data {

// Built-in kinds, in priority order: when spans overlap, the merged span takes the kind that
// comes first here.
enum class PiiKind : uint8_t {
  url_credentials,
  api_key,
  email,
  id_card,
  bank_card,
  passport,
  phone,
  ip,
  custom,  // a --pii-pattern NAME=REGEX
};
constexpr size_t n_builtin_pii_kinds = 8;

// The placeholder name of a built-in kind: "EMAIL", "PHONE", "ID_CARD", ...
const char* pii_kind_name(PiiKind kind);

struct PiiPattern {
  std::string name;   // placeholder name, [A-Z0-9_]+, e.g. EMPLOYEE_ID -> "[EMPLOYEE_ID]"
  std::string regex;  // Hyperscan syntax (PCRE subset without lookaround or backreferences)
};

struct PiiOptions {
  // Kinds to detect, indexed by PiiKind (custom excluded).
  std::array<bool, n_builtin_pii_kinds> enabled{true, true, true, true, true, true, true, true};
  // URL credentials: mask the whole URL (true) or only "user:password" (false).
  bool mask_whole_url = true;
  // Passports are only taken with a "passport"/"护照" keyword shortly before the number.
  std::vector<PiiPattern> custom;
};

struct PiiSpan {
  size_t begin = 0;  // byte offsets into the scanned text, [begin, end)
  size_t end = 0;
  PiiKind kind = PiiKind::custom;
  uint16_t custom_index = 0;  // into PiiOptions::custom when kind == custom
};

// Per-kind counts of masked spans; custom kinds by name.
struct PiiCounts {
  std::array<uint64_t, n_builtin_pii_kinds> builtin{};
  std::vector<uint64_t> custom;
  uint64_t total() const;
  void add(const PiiCounts& other);
};

// Thread-safe after construction: find()/mask() may run concurrently (each call uses its own
// Hyperscan scratch, cloned from a prototype, cached per thread).
class PiiScanner {
 public:
  explicit PiiScanner(PiiOptions options = {});
  ~PiiScanner();
  PiiScanner(const PiiScanner&) = delete;
  PiiScanner& operator=(const PiiScanner&) = delete;

  // Validated spans, sorted, non-overlapping (overlaps are merged into one span).
  std::vector<PiiSpan> find(std::string_view text) const;

  // `text` with every span replaced by its placeholder ("[EMAIL]"); counts are added to `counts`
  // when given.
  std::string mask(std::string_view text, PiiCounts* counts = nullptr) const;

  // The placeholder name of a span's kind ("EMAIL", or the custom name).
  const std::string& name_of(const PiiSpan& span) const;
  const PiiOptions& options() const { return options_; }
  // Names of all kinds in report order: built-ins then custom.
  std::vector<std::string> kind_names() const;

 private:
  struct Impl;
  PiiOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Validators, exposed for tests and for reuse.
bool luhn_valid(std::string_view digits);
// 18-digit (with the ISO 7064 MOD 11-2 check character) or 15-digit resident ID, digits only
// (an 'X'/'x' allowed last); checks the province code and the birth date.
bool cn_id_valid(std::string_view id);
bool ipv4_valid(std::string_view s);
bool ipv6_valid(std::string_view s);

}  // namespace dsft::data
