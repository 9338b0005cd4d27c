// Encoding detection and conversion to UTF-8 through glibc's iconv, for whole buffers and as a
// stream (a FILE* made with fopencookie, so every reader works on converted bytes unchanged).
#include <errno.h>
#include <iconv.h>

#include <cstring>
#include <memory>

#include "dsft/data/ingest_text.h"
#include "dsft/data/jsonl.h"
#include "dsft/util/error.h"

namespace dsft::data {

namespace {

std::string canonical_encoding(const std::string& e) {
  std::string l;
  for (char c : e) l.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (l == "utf8" || l == "utf-8" || l == "utf-8-sig") return "utf-8";
  if (l == "gbk" || l == "cp936" || l == "gb2312" || l == "gb18030")
    return "gb18030";  // GB18030 ⊃ GBK ⊃ GB2312
  if (l == "utf16" || l == "utf-16") return "utf-16";
  if (l == "utf16le" || l == "utf-16le") return "utf-16le";
  if (l == "utf16be" || l == "utf-16be") return "utf-16be";
  return e;
}

iconv_t open_iconv(const std::string& from, const std::string& name) {
  iconv_t cd = iconv_open("UTF-8", from.c_str());
  if (cd == reinterpret_cast<iconv_t>(-1))
    throw UsageError("unknown encoding '" + from + "' for " + name +
                     " (try utf-8, gb18030, utf-16 or an iconv name)");
  return cd;
}

// True when `s` converts from GB18030 without an invalid sequence (an incomplete one at the
// end is allowed unless `complete`).
bool decodes_as_gb18030(std::string_view s, bool complete) {
  iconv_t cd = iconv_open("UTF-8", "GB18030");
  if (cd == reinterpret_cast<iconv_t>(-1)) return false;
  std::string out(s.size() * 2 + 16, '\0');
  char* in = const_cast<char*>(s.data());
  size_t in_left = s.size();
  bool ok = true;
  while (in_left > 0) {
    char* o = out.data();
    size_t o_left = out.size();
    if (iconv(cd, &in, &in_left, &o, &o_left) == static_cast<size_t>(-1)) {
      if (errno == E2BIG) continue;
      ok = errno == EINVAL && !complete;
      break;
    }
  }
  iconv_close(cd);
  return ok;
}

// fopencookie stream: reads raw bytes from `raw` and hands out UTF-8.
struct Decoder {
  std::FILE* raw = nullptr;
  iconv_t cd = reinterpret_cast<iconv_t>(-1);
  std::vector<char> in = std::vector<char>(1 << 16);
  size_t in_len = 0;
  bool eof = false;
  bool skip_bom = true;
};

ssize_t decoder_read(void* cookie, char* buf, size_t size) {
  auto* d = static_cast<Decoder*>(cookie);
  for (;;) {
    if (!d->eof && d->in_len < d->in.size() / 2) {
      size_t got = std::fread(d->in.data() + d->in_len, 1, d->in.size() - d->in_len, d->raw);
      if (got == 0) {
        if (std::ferror(d->raw)) return -1;
        d->eof = true;
      }
      d->in_len += got;
    }
    if (d->in_len == 0) return 0;
    char* in = d->in.data();
    size_t in_left = d->in_len;
    char* out = buf;
    size_t out_left = size;
    size_t r = iconv(d->cd, &in, &in_left, &out, &out_left);
    int err = errno;
    size_t produced = size - out_left;
    std::memmove(d->in.data(), in, in_left);
    d->in_len = in_left;
    // EILSEQ, or a sequence cut by the end of the file: hand out the good bytes first, then fail.
    bool bad = r == static_cast<size_t>(-1) && (err == EILSEQ || (err == EINVAL && d->eof));
    if (produced == 0) {
      if (bad) {
        errno = EILSEQ;
        return -1;
      }
      continue;  // only a BOM or a cut sequence so far: read on
    }
    if (d->skip_bom) {  // iconv keeps a BOM when the encoding names its byte order
      d->skip_bom = false;
      if (produced >= 3 && std::memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
        std::memmove(buf, buf + 3, produced - 3);
        produced -= 3;
        if (produced == 0) continue;
      }
    }
    return static_cast<ssize_t>(produced);
  }
}

int decoder_close(void* cookie) {
  auto* d = static_cast<Decoder*>(cookie);
  iconv_close(d->cd);
  int r = std::fclose(d->raw);
  delete d;
  return r;
}

}  // namespace

std::string detect_encoding(std::string_view sample, bool complete, const std::string& name) {
  if (sample.size() >= 3 && std::memcmp(sample.data(), "\xEF\xBB\xBF", 3) == 0) return "utf-8";
  if (sample.size() >= 2 && std::memcmp(sample.data(), "\xFF\xFE", 2) == 0) return "utf-16le";
  if (sample.size() >= 2 && std::memcmp(sample.data(), "\xFE\xFF", 2) == 0) return "utf-16be";
  std::string_view check = complete ? sample : sample.substr(0, utf8_complete_prefix(sample));
  if (is_valid_utf8(check)) return "utf-8";
  if (std::memchr(sample.data(), '\0', sample.size()) == nullptr && decodes_as_gb18030(sample, complete))
    return "gb18030";
  throw Error(
      name +
      " is neither UTF-8 nor GB18030/GBK text (pass --encoding with its encoding, e.g. --encoding big5)");
}

std::FILE* open_utf8(const std::string& path, const std::string& encoding, std::string* used) {
  std::FILE* raw = std::fopen(path.c_str(), "rb");
  if (!raw) throw Error("cannot open " + path + ": " + std::strerror(errno));
  std::string enc = canonical_encoding(encoding);
  if (enc == "auto") {
    std::string sample(1 << 16, '\0');
    size_t n = std::fread(sample.data(), 1, sample.size(), raw);
    sample.resize(n);
    bool complete = n < (1 << 16);
    try {
      enc = detect_encoding(sample, complete, path);
    } catch (...) {
      std::fclose(raw);
      throw;
    }
    std::rewind(raw);
  }
  if (used) *used = enc;
  if (enc == "utf-8") return raw;
  auto* d = new Decoder;
  d->raw = raw;
  try {
    // A BOM decides the byte order of UTF-16; iconv's "UTF-16" reads it.
    d->cd = open_iconv(enc == "utf-16le" || enc == "utf-16be" ? "UTF-16" : enc, path);
  } catch (...) {
    std::fclose(raw);
    delete d;
    throw;
  }
  cookie_io_functions_t io{};
  io.read = decoder_read;
  io.close = decoder_close;
  std::FILE* f = fopencookie(d, "r", io);
  if (!f) {
    iconv_close(d->cd);
    std::fclose(raw);
    delete d;
    throw Error("cannot open a decoding stream for " + path);
  }
  return f;
}

std::string to_utf8(std::string_view bytes, const std::string& encoding, const std::string& name) {
  std::string enc = canonical_encoding(encoding);
  if (enc == "auto") enc = detect_encoding(bytes, true, name);
  if (enc == "utf-8") {
    if (bytes.size() >= 3 && std::memcmp(bytes.data(), "\xEF\xBB\xBF", 3) == 0) bytes.remove_prefix(3);
    if (!is_valid_utf8(bytes))
      throw Error(name + " is not valid UTF-8 (pass --encoding with its encoding, e.g. --encoding gb18030)");
    return std::string(bytes);
  }
  iconv_t cd = open_iconv(enc == "utf-16le" || enc == "utf-16be" ? "UTF-16" : enc, name);
  std::string out;
  out.resize(bytes.size() * 2 + 16);
  char* in = const_cast<char*>(bytes.data());
  size_t in_left = bytes.size();
  size_t used = 0;
  while (in_left > 0) {
    char* o = out.data() + used;
    size_t o_left = out.size() - used;
    size_t r = iconv(cd, &in, &in_left, &o, &o_left);
    used = out.size() - o_left;
    if (r == static_cast<size_t>(-1)) {
      if (errno == E2BIG) {
        out.resize(out.size() * 2);
        continue;
      }
      size_t at = bytes.size() - in_left;
      iconv_close(cd);
      throw Error(name + " has a byte sequence that is not valid " + enc + " at byte " + std::to_string(at) +
                  " (pass --encoding with the file's encoding)");
    }
  }
  iconv_close(cd);
  out.resize(used);
  if (out.size() >= 3 && std::memcmp(out.data(), "\xEF\xBB\xBF", 3) == 0) out.erase(0, 3);
  return out;
}

}  // namespace dsft::data
