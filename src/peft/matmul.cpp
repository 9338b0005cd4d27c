// bf16 products on the CPU through oneDNN's matmul primitive, cached per shape and layout.
// The primitive is what libtorch's mm reaches for bf16 as well (same library, same kernels);
// calling it directly skips building the primitive descriptor on every call and folds the
// scale into the fp32 accumulator.
#include "dsft/peft/matmul.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>

#ifdef DSFT_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#if DNNL_VERSION_MAJOR != 2
#undef DSFT_HAVE_ONEDNN  // the primitive API below is oneDNN 2's
#endif
#endif

namespace dsft::peft {

namespace {

at::Tensor torch_matmul(const at::Tensor& a, const at::Tensor& b, double alpha) {
  at::Tensor c = at::mm(a, b);
  if (alpha != 1.0) c.mul_(alpha);
  return c;
}

#ifdef DSFT_HAVE_ONEDNN

// Strides oneDNN can read without a copy: row-major or column-major with a leading dimension.
bool plain_strides(const at::Tensor& t, int64_t& s0, int64_t& s1) {
  const int64_t r = t.size(0), c = t.size(1);
  if ((c == 1 || t.stride(1) == 1) && (r == 1 || t.stride(0) >= c)) {
    s0 = r == 1 ? c : t.stride(0);
    s1 = 1;
    return true;
  }
  if ((r == 1 || t.stride(0) == 1) && (c == 1 || t.stride(1) >= r)) {
    s0 = 1;
    s1 = c == 1 ? r : t.stride(1);
    return true;
  }
  return false;
}

struct Key {
  int64_t m, k, n, as0, as1, bs0, bs1, cs0, cs1;
  bool c_f32;  // the output in fp32 (else bf16)
  bool accumulate;
  float alpha;
  bool operator==(const Key& o) const { return std::memcmp(this, &o, sizeof(Key)) == 0; }
};

struct KeyHash {
  size_t operator()(const Key& key) const {
    const auto* p = reinterpret_cast<const unsigned char*>(&key);
    size_t h = 1469598103934665603ULL;  // FNV-1a over the bytes (padding is zeroed below)
    for (size_t i = 0; i < sizeof(Key); ++i) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
  }
};

struct Primitive {
  dnnl::matmul prim;
  dnnl::memory::desc a, b, c;
};

class Cache {
 public:
  static Cache& get() {
    static Cache cache;
    return cache;
  }

  bool enabled() const { return enabled_; }

  std::shared_ptr<Primitive> find(const Key& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second;
    if (map_.size() >= kCapacity) map_.clear();  // packed batches vary M; old shapes go
    auto p = build(key);
    map_.emplace(key, p);
    return p;
  }

  dnnl::engine& engine() { return engine_; }

 private:
  static constexpr size_t kCapacity = 512;

  Cache() : engine_(dnnl::engine::kind::cpu, 0) {
    const char* env = std::getenv("DSFT_ONEDNN_MATMUL");
    if (env && std::strcmp(env, "0") == 0) return;
    // A CPU without bf16 support in this oneDNN (no AVX-512) cannot build the primitive.
    Key probe;
    std::memset(&probe, 0, sizeof(probe));
    probe.m = probe.k = probe.n = 16;
    probe.as0 = probe.bs0 = probe.cs0 = 16;
    probe.as1 = probe.bs1 = probe.cs1 = 1;
    probe.alpha = 1.0f;
    enabled_ = build(probe) != nullptr;
  }

  std::shared_ptr<Primitive> build(const Key& key) {
    using dt = dnnl::memory::data_type;
    try {
      auto p = std::make_shared<Primitive>();
      p->a = dnnl::memory::desc({key.m, key.k}, dt::bf16, {key.as0, key.as1});
      p->b = dnnl::memory::desc({key.k, key.n}, dt::bf16, {key.bs0, key.bs1});
      p->c = dnnl::memory::desc({key.m, key.n}, key.c_f32 ? dt::f32 : dt::bf16, {key.cs0, key.cs1});
      dnnl::primitive_attr attr;
      if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
      if (key.accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p->a, p->b, p->c), attr, engine_);
      // oneDNN's reference loops (what it falls back to for, e.g., a column-major output) are
      // hundreds of times slower than its kernels: libtorch takes such products instead.
      if (std::strncmp(pd.impl_info_str(), "ref", 3) == 0) return nullptr;
      p->prim = dnnl::matmul(pd);
      return p;
    } catch (const dnnl::error&) {
      return nullptr;
    }
  }

  std::mutex mu_;
  std::unordered_map<Key, std::shared_ptr<Primitive>, KeyHash> map_;
  dnnl::engine engine_;
  bool enabled_ = false;
};

// c ([M, N] bf16 or fp32, with plain strides) = alpha a b (+ c when accumulating); false when
// oneDNN cannot take these operands (or has only its reference loops for them) and the caller
// should use libtorch.
bool onednn_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, double alpha,
                   bool accumulate) {
  Cache& cache = Cache::get();
  if (!cache.enabled() || !a.device().is_cpu() || a.scalar_type() != at::kBFloat16 ||
      b.scalar_type() != at::kBFloat16 || !b.device().is_cpu() || a.dim() != 2 || b.dim() != 2 ||
      c.dim() != 2 || !c.device().is_cpu() ||
      (c.scalar_type() != at::kBFloat16 && c.scalar_type() != at::kFloat))
    return false;
  if (a.size(1) != b.size(0) || a.size(0) == 0 || a.size(1) == 0 || b.size(1) == 0 ||
      c.size(0) != a.size(0) || c.size(1) != b.size(1))
    return false;
  Key key;
  std::memset(&key, 0, sizeof(key));
  if (!plain_strides(c, key.cs0, key.cs1)) return false;
  at::Tensor ac = a, bc = b;
  if (!plain_strides(ac, key.as0, key.as1)) {
    ac = a.contiguous();
    plain_strides(ac, key.as0, key.as1);
  }
  if (!plain_strides(bc, key.bs0, key.bs1)) {
    bc = b.contiguous();
    plain_strides(bc, key.bs0, key.bs1);
  }
  key.m = a.size(0);
  key.k = a.size(1);
  key.n = b.size(1);
  key.c_f32 = c.scalar_type() == at::kFloat;
  key.accumulate = accumulate;
  key.alpha = static_cast<float>(alpha);
  std::shared_ptr<Primitive> p = cache.find(key);
  if (!p) return false;
  dnnl::engine& eng = cache.engine();
  dnnl::memory ma(p->a, eng, ac.data_ptr()), mb(p->b, eng, bc.data_ptr()), mc(p->c, eng, c.data_ptr());
  static thread_local dnnl::stream s(eng);  // one per calling thread, not one per product
  p->prim.execute(s, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  s.wait();
  return true;
}

#endif  // DSFT_HAVE_ONEDNN

}  // namespace

bool direct_bf16_matmul() {
#ifdef DSFT_HAVE_ONEDNN
  return Cache::get().enabled();
#else
  return false;
#endif
}

at::Tensor product(const at::Tensor& a, const at::Tensor& b, double alpha) {
#ifdef DSFT_HAVE_ONEDNN
  if (a.dim() == 2 && b.dim() == 2 && a.scalar_type() == at::kBFloat16 && a.device().is_cpu()) {
    at::Tensor c = at::empty({a.size(0), b.size(1)}, a.options());
    if (onednn_matmul(a, b, c, alpha, false)) return c;
  }
#endif
  return torch_matmul(a, b, alpha);
}

void product_into(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double alpha,
                  bool accumulate) {
#ifdef DSFT_HAVE_ONEDNN
  if (onednn_matmul(a, b, c, alpha, accumulate)) return;
#endif
  if (c.scalar_type() == a.scalar_type()) {
    if (accumulate) {
      c.addmm_(a, b, 1.0, alpha);
    } else {
      c.copy_(torch_matmul(a, b, alpha));
    }
    return;
  }
  // A wider output on the CPU takes the product in its own dtype (the fp32 sums oneDNN would give);
  // on other devices the product keeps the operands' dtype (tensor cores) and is then widened.
  at::Tensor p = a.device().is_cpu() ? at::mm(a.to(c.scalar_type()), b.to(c.scalar_type()))
                                     : at::mm(a, b).to(c.scalar_type());
  if (accumulate) {
    c.add_(p, alpha);
  } else {
    if (alpha != 1.0) p.mul_(alpha);
    c.copy_(p);
  }
}

void add_product_(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double alpha) {
  product_into(c, a, b, alpha, /*accumulate=*/true);
}

}  // namespace dsft::peft
