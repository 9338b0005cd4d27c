// The C interface between dsft and libsentencepiece. Debian's libsentencepiece carries its own
// copy of protobuf (3.14) and exports it; libtorch loads libprotobuf 3.21. In one global symbol
// scope each breaks the other (a crash at startup, or "compiled against 3.14" aborts). So
// libsentencepiece is only ever linked into the plugin libdsft_spm.so, which dsft opens with
// RTLD_LOCAL | RTLD_DEEPBIND: the plugin and SentencePiece resolve protobuf to SentencePiece's
// copy, and nothing of theirs leaks into the scope libtorch uses. Plain C types only.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSFT_SPM_API_VERSION 1

typedef struct dsft_spm_api {
  int version;
  // Loads a serialized ModelProto; NULL on failure with the reason in err.
  void* (*load)(const char* proto, size_t len, char* err, size_t errlen);
  void (*free_model)(void* model);
  int (*piece_size)(const void* model);
  // The piece's bytes, valid while the model lives.
  const char* (*id_to_piece)(const void* model, int id, size_t* len);
  int (*piece_to_id)(const void* model, const char* piece, size_t len);
  int (*bos_id)(const void* model);
  int (*eos_id)(const void* model);
  int (*pad_id)(const void* model);
  // 0 on success; *ids is allocated by the plugin and released with free_buf.
  int (*encode)(const void* model, const char* text, size_t len, int** ids, size_t* n, char* err, size_t errlen);
  int (*decode)(const void* model, const int* ids, size_t n, char** out, size_t* len, char* err, size_t errlen);
  // Trains with the given key/value options on in-memory sentences; *model_out (released with
  // free_buf) receives the serialized model. 0 on success.
  int (*train)(const char* const* keys, const char* const* values, size_t nargs, const char* const* sentences,
               const size_t* lengths, size_t n, unsigned seed, char** model_out, size_t* model_len, char* err,
               size_t errlen);
  void (*free_buf)(void* buf);
} dsft_spm_api;

const dsft_spm_api* dsft_spm_get_api(void);

#ifdef __cplusplus
}
#endif
