#!/usr/bin/python3
"""The reference for scripts/bench/train_vs_pytorch.sh: a plain PyTorch eager LoRA fine-tune of a
llama model, written the way a user writes one (nn.Module model, LoRA wrappers on the projections,
torch.optim.AdamW, LambdaLR with the cosine-with-warmup schedule, clip_grad_norm_, full-vocabulary
logits and F.cross_entropy).

It trains on exactly what `dsft train` sees: the model's safetensors, the micro-batches and the
initial LoRA adapter written by dsft_bench_train_batches, so its loss curve can be compared with
dsft's step by step. Run it with Debian's /usr/bin/python3 (python3-torch, the same libtorch).

  train_peer.py --model DIR --batches DIR --out metrics.jsonl --lr 2e-4 --warmup-steps 2
                [--r 16 --alpha 32] [--bf16] [--threads N]

One JSON line per optimizer step: step, loss, lr, grad_norm, tokens, seconds, tokens_per_s.
"""
import argparse
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# safetensors, read by hand (the format: u64 header length, JSON header, raw little-endian data)

_DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path):
    """Yields (name, tensor), reading one tensor at a time (no second copy of the file in memory)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            f.seek(8 + n + begin)
            buf = bytearray(f.read(end - begin))
            yield name, torch.frombuffer(buf, dtype=_DT[info["dtype"]]).view(info["shape"])


# ----------------------------------------------------------------------------------------------
# The model


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LoraLinear(nn.Module):
    """y = x Wᵀ + (x Aᵀ Bᵀ) · alpha / r, W frozen, A and B trained (PEFT's LoRA, fp32 adapters)."""

    def __init__(self, base: nn.Linear, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or c["hidden_size"] // self.nh
        h = c["hidden_size"]
        self.q_proj = nn.Linear(h, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, h, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(q.dtype)
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(k.dtype)
        if self.nkv != self.nh:
            k = k.repeat_interleave(self.nh // self.nkv, dim=1)
            v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(self.hd)
        scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
        probs = scores.softmax(-1).to(v.dtype)
        out = (probs @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(out)


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = Mlp(c)

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        if c.get("rope_scaling"):
            raise SystemExit("train_peer.py implements unscaled RoPE only (rope_scaling: null)")
        self.model = Decoder(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        self.register_buffer("inv_freq", inv.float(), persistent=False)

    def forward(self, input_ids, position_ids, segment_ids):
        T = input_ids.shape[1]
        angles = position_ids.float().unsqueeze(-1) * self.inv_freq  # [B, T, hd/2]
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)  # [B, 1, T, hd]
        cos, sin = angles.cos(), angles.sin()
        # Causal and block-diagonal over the records packed into a row.
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        mask = (segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)) & causal
        mask = mask.unsqueeze(1)
        h = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.model.norm(h))


def add_lora(model, targets, r, alpha):
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in targets and not name.endswith(("lora_A", "lora_B")):
                setattr(module, child_name, LoraLinear(child, r, alpha))


# ----------------------------------------------------------------------------------------------
# Data


def read_batches(path):
    raw = open(path, "rb").read()
    (count,) = struct.unpack_from("<q", raw, 0)
    off, out = 8, []
    for _ in range(count):
        B, T = struct.unpack_from("<qq", raw, off)
        off += 16
        n = B * T

        def take(dtype):
            nonlocal off
            a = np.frombuffer(raw, dtype=dtype, count=n, offset=off).reshape(B, T)
            off += n * np.dtype(dtype).itemsize
            return torch.from_numpy(a.copy())

        ids, mask = take(np.int64), take(np.uint8)
        seg, pos = take(np.int32), take(np.int64)
        out.append((ids, mask.bool(), seg.long(), pos))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", required=True, help="directory written by dsft_bench_train_batches")
    ap.add_argument("--out", required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--bf16", action="store_true", help="bf16 base weights, fp32 LoRA, autocast bf16")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)

    cfg = json.load(open(os.path.join(a.model, "config.json")))
    meta = json.load(open(os.path.join(a.batches, "batches.json")))
    acfg = json.load(open(os.path.join(a.batches, "adapter0", "adapter_config.json")))
    steps, accum = meta["max_steps"], meta["gradient_accumulation_steps"]
    batches = read_batches(os.path.join(a.batches, "batches.bin"))

    model = Llama(cfg)
    if a.bf16:
        model.to(torch.bfloat16)
    model.requires_grad_(False)
    state = model.state_dict()
    loaded = set()
    for f in sorted(os.listdir(a.model)):
        if f.endswith(".safetensors"):
            for k, v in read_safetensors(os.path.join(a.model, f)):
                state[k].copy_(v)
                loaded.add(k)
    if loaded != set(state):
        raise SystemExit(f"train_peer.py: {a.model} lacks {sorted(set(state) - loaded)[:3]}")
    r, alpha = acfg["r"], acfg["lora_alpha"]
    if acfg.get("use_rslora"):
        raise SystemExit("train_peer.py: rslora is not implemented")
    add_lora(model, set(acfg["target_modules"]), r, alpha)
    # The initial A matrices are dsft's (B starts at zero on both sides).
    init = read_safetensors(os.path.join(a.batches, "adapter0", "adapter_model.safetensors"))
    init = {k.removeprefix("base_model.model."): v for k, v in init}
    named = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in init.items():
            if k not in named:
                raise SystemExit(f"train_peer.py: the initial adapter has {k}, the model does not")
            named[k].copy_(v)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(init), (len(trainable), len(init))

    opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def cosine(step):
        if step < a.warmup_steps:
            return step / max(1, a.warmup_steps)
        progress = (step - a.warmup_steps) / max(1, steps - a.warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    model.train()
    out = open(a.out, "w")
    for step in range(steps):
        t0 = time.perf_counter()
        micro = batches[step * accum:(step + 1) * accum]
        n_targets = sum(int(m[:, 1:].sum()) for _, m, _, _ in micro)
        n_tokens = sum(int((s >= 0).sum()) for _, _, s, _ in micro)
        loss_sum = 0.0
        for ids, mask, seg, pos in micro:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                logits = model(ids, pos, seg)
            labels = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=-100, reduction="sum")
            (loss / n_targets).backward()
            loss_sum += loss.item()
        lr = sched.get_last_lr()[0]
        norm = torch.nn.utils.clip_grad_norm_(trainable, a.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        out.write(json.dumps({"step": step + 1, "loss": loss_sum / n_targets, "lr": lr, "grad_norm": float(norm),
                              "tokens": n_tokens, "seconds": dt, "tokens_per_s": n_tokens / dt}) + "\n")
        out.flush()
    out.close()


if __name__ == "__main__":
    main()
