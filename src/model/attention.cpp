// Attention: the shared softmax(q kᵀ) v core (fp32 scores) and grouped-query attention as used
// by llama and qwen2, with an optional KV cache.
#include <algorithm>
#include <limits>
#include <numeric>

#include "dsft/model/layers.h"

namespace dsft::model {

namespace {

// softmax(q kᵀ · scale) v where `blocked` (bool, broadcast to the scores) is false; scores in the
// compute dtype, then fp32 (fp64 for fp64) for the softmax.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& blocked, double scale) {
  auto scores = torch::matmul(q, k.transpose(-2, -1)).to(accumulation_dtype(q.scalar_type())) * scale;
  if (blocked.defined()) {
    // The lowest finite value, not -inf: a fully masked row (a padding query) then gives a
    // uniform distribution instead of NaN.
    scores = scores.masked_fill(blocked, std::numeric_limits<float>::lowest());
  }
  auto probs = torch::softmax(scores, -1).to(v.scalar_type());
  return torch::matmul(probs, v);
}

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
  std::vector<int64_t> record(static_cast<size_t>(chunks * C), -1);  // span index in each slot
  std::vector<int64_t> used(static_cast<size_t>(chunks), 0);
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    const int64_t r = row_of[i];
    for (int64_t j = 0; j < s.length; ++j) {
      const int64_t slot = r * C + used[static_cast<size_t>(r)] + j, token = s.row * T + s.begin + j;
      gather[static_cast<size_t>(slot)] = token;
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
