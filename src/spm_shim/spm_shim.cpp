// libdsft_spm.so: libsentencepiece behind the plain C interface of spm_api.h (see there why).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "spm_api.h"

namespace {

void set_err(char* err, size_t errlen, const std::string& msg) {
  if (!err || errlen == 0) return;
  size_t n = msg.size() < errlen - 1 ? msg.size() : errlen - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

using Processor = sentencepiece::SentencePieceProcessor;
const Processor* cast(const void* m) { return static_cast<const Processor*>(m); }

void* load(const char* proto, size_t len, char* err, size_t errlen) {
  try {
    auto* sp = new Processor();
    auto status = sp->LoadFromSerializedProto(std::string_view(proto, len));
    if (!status.ok()) {
      set_err(err, errlen, status.ToString());
      delete sp;
      return nullptr;
    }
    return sp;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
    return nullptr;
  }
}

void free_model(void* m) { delete static_cast<Processor*>(m); }
int piece_size(const void* m) { return cast(m)->GetPieceSize(); }
const char* id_to_piece(const void* m, int id, size_t* len) {
  const std::string& p = cast(m)->IdToPiece(id);
  *len = p.size();
  return p.data();
}
int piece_to_id(const void* m, const char* piece, size_t len) { return cast(m)->PieceToId(std::string_view(piece, len)); }
int bos_id(const void* m) { return cast(m)->bos_id(); }
int eos_id(const void* m) { return cast(m)->eos_id(); }
int pad_id(const void* m) { return cast(m)->pad_id(); }

int encode(const void* m, const char* text, size_t len, int** ids, size_t* n, char* err, size_t errlen) {
  try {
    std::vector<int> out;
    auto status = cast(m)->Encode(std::string_view(text, len), &out);
    if (!status.ok()) {
      set_err(err, errlen, status.ToString());
      return 1;
    }
    *n = out.size();
    *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.empty() ? 1 : out.size())));
    if (!*ids) return set_err(err, errlen, "out of memory"), 1;
    if (!out.empty()) std::memcpy(*ids, out.data(), sizeof(int) * out.size());
    return 0;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
    return 1;
  }
}

int decode(const void* m, const int* ids, size_t n, char** out, size_t* len, char* err, size_t errlen) {
  try {
    std::vector<int> v(ids, ids + n);
    std::string s;
    auto status = cast(m)->Decode(v, &s);
    if (!status.ok()) {
      set_err(err, errlen, status.ToString());
      return 1;
    }
    *len = s.size();
    *out = static_cast<char*>(std::malloc(s.size() + 1));
    if (!*out) return set_err(err, errlen, "out of memory"), 1;
    std::memcpy(*out, s.data(), s.size());
    (*out)[s.size()] = '\0';
    return 0;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
    return 1;
  }
}

class VectorIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

int train(const char* const* keys, const char* const* values, size_t nargs, const char* const* sentences,
          const size_t* lengths, size_t n, unsigned seed, char** model_out, size_t* model_len, char* err,
          size_t errlen) {
  try {
    std::unordered_map<std::string, std::string> args;
    for (size_t i = 0; i < nargs; ++i) args[keys[i]] = values[i];
    std::vector<std::string> corpus;
    corpus.reserve(n);
    for (size_t i = 0; i < n; ++i) corpus.emplace_back(sentences[i], lengths[i]);
    sentencepiece::SetRandomGeneratorSeed(seed);
    VectorIterator it(corpus);
    std::string model;
    auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
    if (!status.ok()) {
      set_err(err, errlen, status.ToString());
      return 1;
    }
    *model_len = model.size();
    *model_out = static_cast<char*>(std::malloc(model.size() + 1));
    if (!*model_out) return set_err(err, errlen, "out of memory"), 1;
    std::memcpy(*model_out, model.data(), model.size());
    return 0;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
    return 1;
  }
}

void free_buf(void* p) { std::free(p); }

const dsft_spm_api kApi = {DSFT_SPM_API_VERSION, load,   free_model, piece_size, id_to_piece, piece_to_id, bos_id,
                           eos_id,               pad_id, encode,     decode,     train,       free_buf};

}  // namespace

extern "C" __attribute__((visibility("default"))) const dsft_spm_api* dsft_spm_get_api(void) { return &kApi; }
