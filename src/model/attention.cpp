// Attention: the shared softmax(q kᵀ) v core (fp32 scores) and grouped-query attention as used
// by llama and qwen2, with an optional KV cache.
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "dsft/model/layers.h"
#include "model/bf16_bits.h"
#include "model/cpu_kernels.h"

namespace dsft::model {

namespace {

// softmax(scores · scale) with `blocked` positions left out, as one node on the CPU for fp32 and
// bf16 scores (kernels::masked_softmax_*): fp32 arithmetic, the fp32 probabilities kept for the
// backward, the output in the scores' dtype. scores [N, H, Tq, S] contiguous; blocked bool
// [N|1, 1, Tq, S] contiguous, or empty for no mask.
struct MaskedSoftmaxFn : public torch::autograd::Function<MaskedSoftmaxFn> {
  // Score row r of [N, H, Tq, S]'s mask row (nullptr without a mask).
  static const bool* mask_row(const torch::Tensor& blocked, int64_t N, int64_t H, int64_t Tq, int64_t r) {
    if (blocked.numel() == 0) return nullptr;
    const int64_t n = blocked.size(0) == N ? r / (H * Tq) : 0;
    return blocked.data_ptr<bool>() + (n * Tq + r % Tq) * blocked.size(3);
  }

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& scores,
                               const torch::Tensor& blocked, double scale) {
    const int64_t N = scores.size(0), H = scores.size(1), Tq = scores.size(2), S = scores.size(3);
    torch::Tensor p32 = torch::empty(scores.sizes(), scores.options().dtype(torch::kFloat32));
    const bool bf16 = scores.scalar_type() == torch::kBFloat16;
    torch::Tensor out = bf16 ? torch::empty_like(scores) : p32;
    const float sc = static_cast<float>(scale);
    at::parallel_for(0, N * H * Tq, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const bool* m = mask_row(blocked, N, H, Tq, r);
        float* p = p32.data_ptr<float>() + r * S;
        if (bf16) {
          kernels::masked_softmax_bf16(bf16_bits(scores) + r * S, m, sc, p, bf16_bits(out) + r * S, S);
        } else {
          kernels::masked_softmax_f32(scores.data_ptr<float>() + r * S, m, sc, p, p, S);
        }
      }
    });
    ctx->save_for_backward({p32, blocked});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["bf16"] = bf16;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &p32 = saved[0], &blocked = saved[1];
    const bool bf16 = ctx->saved_data["bf16"].toBool();
    const float sc = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const int64_t N = p32.size(0), H = p32.size(1), Tq = p32.size(2), S = p32.size(3);
    const torch::Tensor dp = grad[0].to(bf16 ? torch::kBFloat16 : torch::kFloat32).contiguous();
    torch::Tensor dx = torch::empty_like(dp);
    at::parallel_for(0, N * H * Tq, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const bool* m = mask_row(blocked, N, H, Tq, r);
        const float* p = p32.data_ptr<float>() + r * S;
        if (bf16) {
          kernels::masked_softmax_grad_bf16(p, bf16_bits(dp) + r * S, m, sc, bf16_bits(dx) + r * S, S);
        } else {
          kernels::masked_softmax_grad_f32(p, dp.data_ptr<float>() + r * S, m, sc,
                                           dx.data_ptr<float>() + r * S, S);
        }
      }
    });
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};

bool fused_softmax_ok(const torch::Tensor& scores, const torch::Tensor& v, const torch::Tensor& blocked) {
  const auto dt = scores.scalar_type();
  if (!scores.device().is_cpu() || (dt != torch::kFloat32 && dt != torch::kBFloat16) ||
      v.scalar_type() != dt || scores.dim() != 4 || !scores.is_contiguous())
    return false;
  if (!blocked.defined()) return true;
  return blocked.scalar_type() == torch::kBool && blocked.dim() == 4 && blocked.is_contiguous() &&
         blocked.size(1) == 1 && blocked.size(2) == scores.size(2) && blocked.size(3) == scores.size(3) &&
         (blocked.size(0) == 1 || blocked.size(0) == scores.size(0));
}

// softmax(q kᵀ · scale) v where `blocked` (bool, broadcast to the scores) is false; scores in the
// compute dtype, then fp32 (fp64 for fp64) for the softmax.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& blocked, double scale) {
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1));
  if (fused_softmax_ok(scores, v, blocked)) {
    // An autograd function takes defined tensors only: no mask is an empty one.
    const torch::Tensor mask = blocked.defined() ? blocked : torch::empty({0}, torch::kBool);
    return torch::matmul(MaskedSoftmaxFn::apply(scores, mask, scale), v);
  }
  scores = scores.to(accumulation_dtype(q.scalar_type())) * scale;
  if (blocked.defined()) {
    // The lowest finite value, not -inf: a fully masked row (a padding query) then gives a
    // uniform distribution instead of NaN.
    scores = scores.masked_fill(blocked, std::numeric_limits<float>::lowest());
  }
  auto probs = torch::softmax(scores, -1).to(v.scalar_type());
  return torch::matmul(probs, v);
}

// Rows of D contiguous elements on a grid [A, H, L] of byte strides (outer, head, inner): row
// r = a·L + l of the destination, at every head, takes row map[r] of the source grid (zeros
// where map[r] < 0). The packed attention rows and their way back are both this copy.
struct RowGrid {
  char* base;
  int64_t outer, head, inner, L;
  char* row(int64_t r, int64_t h) const { return base + (r / L) * outer + h * head + (r % L) * inner; }
};

RowGrid grid(const torch::Tensor& t, int64_t outer_dim, int64_t inner_dim) {
  const int64_t e = static_cast<int64_t>(t.element_size());
  return {static_cast<char*>(t.data_ptr()), t.stride(outer_dim) * e, t.stride(inner_dim == 1 ? 2 : 1) * e,
          t.stride(inner_dim) * e, t.size(inner_dim)};
}

void copy_rows(const RowGrid& dst, int64_t rows, const RowGrid& src, const int64_t* map, int64_t heads,
               int64_t row_bytes) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t m = map[r];
      for (int64_t h = 0; h < heads; ++h) {
        char* d = dst.row(r, h);
        if (m < 0) {
          std::memset(d, 0, static_cast<size_t>(row_bytes));
        } else {
          std::memcpy(d, src.row(m, h), static_cast<size_t>(row_bytes));
        }
      }
    }
  });
}

// A new tensor of `shape` whose rows (the grid of dims 0 and `inner`; the other of dims 1 and 2
// is the heads) take src's rows (grid of dims 0 and `src_inner`) by `map`, zeros where it is < 0.
torch::Tensor regroup(const torch::Tensor& src_in, int64_t src_inner, const std::vector<int64_t>& shape,
                      int64_t inner, const torch::Tensor& map) {
  const torch::Tensor src = src_in.stride(3) == 1 ? src_in : src_in.contiguous();
  torch::Tensor dst = torch::empty(shape, src.options());
  const auto rows = shape[0] * shape[static_cast<size_t>(inner)], heads = shape[inner == 1 ? 2 : 1];
  copy_rows(grid(dst, 0, inner), rows, grid(src, 0, src_inner), map.data_ptr<int64_t>(), heads,
            shape[3] * static_cast<int64_t>(src.element_size()));
  return dst;
}

// The regrouping between token order and the packed rows as one node: forward takes x's rows by
// `forward_map` into `shape`, backward takes the gradient's rows back by `backward_map` (each map
// the other's inverse on the slots that hold a token; free slots get zeros).
//   pack:   x [B, H, T, D] -> [chunks, H, C, D], forward_map = source, backward_map = scatter;
//   unpack: y [chunks, H, C, D] -> [B, T, H, D] (what the output projection reads), maps swapped.
struct RegroupRowsFn : public torch::autograd::Function<RegroupRowsFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& forward_map, const torch::Tensor& backward_map,
                               const std::vector<int64_t>& shape, int64_t inner) {
    ctx->save_for_backward({backward_map});
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->saved_data["inner"] = inner;
    return regroup(x, 2, shape, inner, forward_map);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const torch::Tensor dx =
        regroup(grad[0], ctx->saved_data["inner"].toInt(), ctx->saved_data["shape"].toIntVector(), 2,
                ctx->get_saved_variables()[0]);
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::optional<SpanPacking> pack_spans(const std::vector<Span>& spans, int64_t B, int64_t T,
                                      const torch::Device& device) {
  if (spans.empty()) return std::nullopt;
  std::vector<size_t> order(spans.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return spans[a].length > spans[b].length; });
  const int64_t longest = spans[order.front()].length;
  // First-fit decreasing into rows of `cap` slots: the row of each span and the rows' fill.
  auto pack = [&](int64_t cap, std::vector<int64_t>& row_of, std::vector<int64_t>& fill) {
    row_of.assign(spans.size(), 0);
    fill.clear();
    for (size_t i : order) {
      size_t r = 0;
      while (r < fill.size() && fill[r] + spans[i].length > cap) ++r;
      if (r == fill.size()) fill.push_back(0);
      row_of[i] = static_cast<int64_t>(r);
      fill[r] += spans[i].length;
    }
  };
  // Row lengths from the longest record (rounded up to 8) to 4 times that: the one with the
  // least attention work (rows × length²).
  std::vector<int64_t> row_of, fill;
  int64_t best_cap = 0, best_cost = 0;
  const int64_t base = std::min(T, (longest + 7) / 8 * 8);
  for (int64_t quarter = 4; quarter <= 16; ++quarter) {
    const int64_t cap = std::min(T, (base * quarter / 4 + 7) / 8 * 8);
    pack(cap, row_of, fill);
    const int64_t cost = static_cast<int64_t>(fill.size()) * cap * cap;
    if (best_cap == 0 || cost < best_cost) best_cap = cap, best_cost = cost;
    if (cap == T) break;
  }
  if (3 * best_cost > 2 * B * T * T) return std::nullopt;
  pack(best_cap, row_of, fill);
  const int64_t C = best_cap, chunks = static_cast<int64_t>(fill.size());
  std::vector<int64_t> gather(static_cast<size_t>(chunks * C), 0), scatter(static_cast<size_t>(B * T), 0);
  std::vector<int64_t> source(static_cast<size_t>(chunks * C), -1);
  std::vector<int64_t> record(static_cast<size_t>(chunks * C), -1);  // span index in each slot
  std::vector<int64_t> used(static_cast<size_t>(chunks), 0);
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    const int64_t r = row_of[i];
    for (int64_t j = 0; j < s.length; ++j) {
      const int64_t slot = r * C + used[static_cast<size_t>(r)] + j, token = s.row * T + s.begin + j;
      gather[static_cast<size_t>(slot)] = token;
      source[static_cast<size_t>(slot)] = token;
      scatter[static_cast<size_t>(token)] = slot;
      record[static_cast<size_t>(slot)] = static_cast<int64_t>(i);
    }
    used[static_cast<size_t>(r)] += s.length;
  }
  // Causal within a record; a free slot sees itself only (its output is never read).
  auto blocked = torch::ones({chunks, 1, C, C}, torch::kBool);
  auto* b = blocked.data_ptr<bool>();
  for (int64_t r = 0; r < chunks; ++r)
    for (int64_t i = 0; i < C; ++i) {
      const int64_t ri = record[static_cast<size_t>(r * C + i)];
      for (int64_t j = 0; j <= i; ++j)
        if (ri < 0 ? j == i : record[static_cast<size_t>(r * C + j)] == ri) b[(r * C + i) * C + j] = false;
    }
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  SpanPacking p;
  p.chunks = chunks;
  p.length = C;
  p.gather = torch::tensor(gather, i64).to(device);
  p.source = torch::tensor(source, i64);
  p.scatter = torch::tensor(scatter, i64).to(device);
  p.blocked = blocked.to(device);
  return p;
}

torch::Tensor attention_core(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionContext& ctx, double scale) {
  if (!ctx.packing)
    return attend(q, k, v, ctx.mask.defined() ? ctx.mask.logical_not() : torch::Tensor(), scale);
  // Packed rows: the records are gathered into their attention rows, attend there, and the
  // outputs are gathered back to the token order (both gathers' backward is one index_add).
  const SpanPacking& p = *ctx.packing;
  const int64_t B = q.size(0), T = q.size(2);
  if (q.device().is_cpu() && p.source.defined()) {
    // One copy each way per tensor, straight between the layouts.
    auto rows = [&](const torch::Tensor& x) {  // [B, H, T, D] -> [chunks, H, C, D]
      const std::vector<int64_t> shape{p.chunks, x.size(1), p.length, x.size(3)};
      return RegroupRowsFn::apply(x, p.source, p.scatter, shape, 2);
    };
    auto out = attend(rows(q), rows(k), rows(v), p.blocked, scale);  // [chunks, H, C, Dv]
    const std::vector<int64_t> tokens{B, T, out.size(1), out.size(3)};
    return RegroupRowsFn::apply(out, p.scatter, p.source, tokens, 1).transpose(1, 2);  // [B, H, T, Dv]
  }
  auto to_rows = [&](const torch::Tensor& x) {  // [B, H, T, D] -> [chunks, H, C, D]
    const int64_t H = x.size(1), D = x.size(3);
    return x.transpose(0, 1)
        .reshape({H, B * T, D})
        .index_select(1, p.gather)
        .view({H, p.chunks, p.length, D})
        .transpose(0, 1);
  };
  auto out = attend(to_rows(q), to_rows(k), to_rows(v), p.blocked, scale);  // [chunks, H, C, Dv]
  const int64_t H = out.size(1), Dv = out.size(3);
  return out.transpose(0, 1)
      .reshape({H, p.chunks * p.length, Dv})
      .index_select(1, p.scatter)
      .view({H, B, T, Dv})
      .transpose(0, 1);  // [B, H, T, Dv]
}

GqaAttentionImpl::GqaAttentionImpl(GqaAttentionOptions options_, std::shared_ptr<const Rope> rope_)
    : options(std::move(options_)), rope(std::move(rope_)) {
  reset();
}

void GqaAttentionImpl::reset() {
  const auto& o = options;
  auto lin = [&](int64_t in, int64_t out, bool bias) {
    return make_linear(in, out, bias, o.tensor_options());
  };
  q_proj = register_module("q_proj", lin(o.hidden_size(), o.n_heads() * o.head_dim(), o.qkv_bias()));
  k_proj = register_module("k_proj", lin(o.hidden_size(), o.n_kv_heads() * o.head_dim(), o.qkv_bias()));
  v_proj = register_module("v_proj", lin(o.hidden_size(), o.n_kv_heads() * o.head_dim(), o.qkv_bias()));
  o_proj = register_module("o_proj", lin(o.n_heads() * o.head_dim(), o.hidden_size(), o.o_bias()));
}

torch::Tensor GqaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                        LayerCache* cache) {
  const auto& o = options;
  const int64_t B = x.size(0), T = x.size(1), hd = o.head_dim();
  auto q = q_proj->forward(x).view({B, T, o.n_heads(), hd}).transpose(1, 2);     // [B, nh, T, hd]
  auto k = k_proj->forward(x).view({B, T, o.n_kv_heads(), hd}).transpose(1, 2);  // [B, nkv, T, hd]
  auto v = v_proj->forward(x).view({B, T, o.n_kv_heads(), hd}).transpose(1, 2);  // [B, nkv, T, hd]
  q = rope->apply(q, ctx.rope);
  k = rope->apply(k, ctx.rope);
  if (cache) {
    if (cache->k.defined()) {
      k = torch::cat({cache->k, k}, 2);  // [B, nkv, S, hd]
      v = torch::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  const int64_t n_rep = o.n_heads() / o.n_kv_heads();
  if (n_rep > 1) {
    // kv head j serves query heads j*n_rep .. j*n_rep + n_rep - 1 (repeat_interleave, not tile).
    k = k.repeat_interleave(n_rep, 1);  // [B, nh, S, hd]
    v = v.repeat_interleave(n_rep, 1);
  }
  auto out = attention_core(q, k, v, ctx, 1.0 / std::sqrt(static_cast<double>(hd)));  // [B, nh, T, hd]
  return o_proj->forward(out.transpose(1, 2).reshape({B, T, o.n_heads() * hd}));
}

}  // namespace dsft::model
