#!/usr/bin/env bash
# dsft train against a plain PyTorch eager loop (scripts/bench/train_peer.py, Debian's python3-torch:
# the same libtorch) on the same LoRA fine-tune: the same random llama-bench model (~50M parameters),
# the same micro-batches, the same initial adapter and hyper-parameters, in fp32 and in bf16 (dsft
# bf16: true against bf16 weights under torch.autocast). Prints a table of steady-state tokens/s,
# peak RSS, the largest per-step loss difference, and model FLOPs utilisation against the measured
# matrix-multiply peak of the machine.
#   scripts/bench/train_vs_pytorch.sh [build-dir]        (default: build; from the project root)
#   STEPS=12 WARMUP=2 ROUNDS=3 THREADS=2 WORK=/tmp/dsft-bench-vs-torch scripts/bench/train_vs_pytorch.sh build
# The build needs -DDSFT_BENCH=ON (dsft and dsft_bench_train_batches). Both sides run one after
# the other with the same thread count and the same BLAS (whatever libblas.so.3 points to, and
# OPENBLAS_CORETYPE if set in the environment). On a machine busy with other jobs use THREADS=1
# or OMP_WAIT_POLICY=passive: OpenMP threads spinning for a preempted peer slow both sides 5-8×.
# About 5 minutes on 2 idle cores (three rounds; each side's best round counts, so that a slow
# phase of a shared VM during one run does not decide the ratio); docs/BENCHMARKS.md has the figures.
set -euo pipefail
BUILD=${1:-build}
DSFT=$BUILD/dsft
DUMP=$BUILD/bench/dsft_bench_train_batches
WORK=${WORK:-/tmp/dsft-bench-vs-torch}
STEPS=${STEPS:-12}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-$(nproc)}
PRECISIONS=${PRECISIONS:-"fp32 bf16"}
ROUNDS=${ROUNDS:-3}
PY=/usr/bin/python3
for b in "$DSFT" "$DUMP"; do
  [ -x "$b" ] || { echo "no $b (configure with -DDSFT_BENCH=ON and build dsft dsft_bench_train_batches)" >&2; exit 1; }
done
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
mkdir -p "$WORK"

# The fine-tune: LoRA r=16 on every projection, 2 packed rows of 256 tokens per micro-batch.
ARGS=(model_name_or_path="$WORK/model" seed=42
  finetuning_type=lora r=16 lora_alpha=32 lora_dropout=0.0
  target_modules=all-linear max_steps="$STEPS" per_device_train_batch_size=2 gradient_accumulation_steps=1
  max_seq_length=256 packing=true learning_rate=1.0e-3 lr_scheduler_type=cosine warmup_steps=2
  weight_decay=0.0 max_grad_norm=1.0 val_size=0 eval_steps=0 save_steps=0 logging_steps=1)
LR=1.0e-3
WARMUP_STEPS=2

# Peak RSS of a command (the largest waited-for child), written as JSON to $1.
measure() {
  local out=$1; shift
  "$PY" -c 'import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
json.dump({"rc": rc, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, open(sys.argv[1], "w"))
sys.exit(rc)' "$out" "$@"
}

echo "== model and batches ($WORK)" >&2
if [ ! -f "$WORK/model/model.safetensors" ]; then
  # The bundled sample is too small a text for an 8192-piece SentencePiece vocabulary, so the model
  # (llama-bench, vocabulary 8192) takes the 512-piece tokenizer that configs/tiny.yaml trains: the
  # ids stay below 512, the lm_head and the loss still cover all 8192 rows.
  rm -rf "$WORK/tokmodel" "$WORK/tokrun" "$WORK/model"
  "$DSFT" train --config configs/tiny.yaml model_name_or_path="$WORK/tokmodel" output_dir="$WORK/tokrun" \
    max_steps=1 val_size=0 eval_steps=0 save_steps=0 > "$WORK/tokrun.log" 2>&1
  pad=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["pad_token_id"])' "$WORK/tokmodel/config.json")
  "$DSFT" init --arch llama --preset bench -o "$WORK/model" --set pad_token_id="$pad" >&2
  cp "$WORK/tokmodel"/tokenizer* "$WORK/model/"
fi
"$DUMP" configs/tiny.yaml "$WORK/batches" "${ARGS[@]}" >&2

echo "== matrix-multiply peak ($THREADS threads)" >&2
"$PY" - "$THREADS" > "$WORK/peak.json" <<'PY'
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
out = {}
for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
        for _ in range(2):
            a @ b
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < 1.0:
            a @ b
            reps += 1
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    out[name] = best
json.dump(out, sys.stdout)
PY

# One run of a side (peer, dsft, dsft-ckpt) in precision $2, round $3: $WORK/<side>-<p>-r<round>.*
run_side() {
  local v=$1 p=$2 r=$3 name="$1-$2-r$3" ck=() extra=() peer=()
  [ "$p" = bf16 ] && extra=(bf16=true) && peer=(--bf16)
  [ "$v" = dsft-ckpt ] && ck=(gradient_checkpointing=true)
  echo "== $v ($p, round $r)" >&2
  if [ "$v" = peer ] || [ "$v" = peer-passive ]; then
    local wait=()
    [ "$v" = peer-passive ] && wait=(env OMP_WAIT_POLICY=passive)
    measure "$WORK/$name.rss.json" "${wait[@]}" "$PY" scripts/bench/train_peer.py --model "$WORK/model" \
      --batches "$WORK/batches" --out "$WORK/$name.jsonl" --lr "$LR" --warmup-steps "$WARMUP_STEPS" \
      --threads "$THREADS" "${peer[@]}" > "$WORK/$name.log" 2>&1 || { tail -5 "$WORK/$name.log" >&2; exit 1; }
  else
    rm -rf "$WORK/$name"
    measure "$WORK/$name.rss.json" "$DSFT" train --config configs/tiny.yaml output_dir="$WORK/$name" \
      "${ARGS[@]}" "${extra[@]}" "${ck[@]}" > "$WORK/$name.log" 2>&1 || { tail -5 "$WORK/$name.log" >&2; exit 1; }
    grep '"loss"' "$WORK/$name/metrics.jsonl" > "$WORK/$name.jsonl"
  fi
}

# Rounds alternate the order (a machine whose load drifts favours neither side); the report takes
# each side's best round for tokens/s and its largest peak RSS.
for p in $PRECISIONS; do
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order="peer peer-passive dsft dsft-ckpt"; else order="dsft-ckpt dsft peer-passive peer"; fi
    for v in $order; do run_side "$v" "$p" "$r"; done
  done
done

"$PY" - "$WORK" "$WARMUP" "$PRECISIONS" "$ROUNDS" <<'PY'
import json, os, sys
sys.path.insert(0, "scripts/bench")
from train_peer import read_batches
work, warmup, precisions, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), int(sys.argv[4])
cfg = json.load(open(f"{work}/model/config.json"))
meta = json.load(open(f"{work}/batches/batches.json"))
peak = json.load(open(f"{work}/peak.json"))
acfg = json.load(open(f"{work}/batches/adapter0/adapter_config.json"))
accum = meta["gradient_accumulation_steps"]
batches = read_batches(f"{work}/batches/batches.bin")

d, L, V, I = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd = d // nh
r = acfg["r"]
body = L * (d * nh * hd * 2 + d * nkv * hd * 2 + 3 * d * I)        # frozen projection weights
lora = L * r * ((d + nh * hd) * 2 + (d + nkv * hd) * 2 + 3 * (d + I))  # LoRA A and B
total = body + 2 * V * d + L * 2 * d + d
# Model FLOPs of one step, for the real (non-padding) tokens: frozen projections forward + input
# gradient (4 per weight per token), LoRA forward + both gradients (6), attention scores and
# values over the row (2·2·T·d forward, twice that backward), lm_head forward + input gradient for
# target tokens only. Work a side spends on padding is not model FLOPs.
steps_tokens, steps_flops = [], []
for s in range(meta["max_steps"]):
    tok = fl = 0
    for ids, mask, seg, pos in batches[s * accum:(s + 1) * accum]:
        B, T = ids.shape
        n = int((seg >= 0).sum()); tgt = int(mask[:, 1:].sum())
        tok += n
        fl += n * (4 * body + 6 * lora + 12 * L * T * d) + tgt * 4 * V * d
    steps_tokens.append(tok); steps_flops.append(fl)

def steady(tps_rows):
    """tokens/s over the steps after the warm-up: total tokens / total seconds."""
    tok = sec = fl = 0.0
    for s, tps in enumerate(tps_rows):
        if s < warmup:
            continue
        tok += steps_tokens[s]; sec += steps_tokens[s] / tps; fl += steps_flops[s]
    return tok / sec, fl / sec

print(f"model: llama-bench, {total / 1e6:.1f}M parameters ({lora / 1e6:.2f}M LoRA, r={r}); "
      f"{meta['max_steps']} steps of {sum(steps_tokens) // len(steps_tokens)} tokens, first {warmup} not timed, "
      f"best of {rounds} rounds")
print(f"matmul peak: fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s "
      f"(torch.mm, {os.environ.get('OMP_NUM_THREADS')} threads)")
print()
print("| precision | side | tokens/s | peak RSS | MFU | max abs loss diff (step 1) | vs eager: tokens/s, RSS | vs eager, passive OpenMP: tokens/s, RSS |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
names = {"peer": "PyTorch eager", "peer-passive": "PyTorch eager, OMP_WAIT_POLICY=passive", "dsft": "dsft",
         "dsft-ckpt": "dsft, gradient_checkpointing"}
sides = ("peer", "peer-passive", "dsft", "dsft-ckpt")
for p in precisions:
    rows, rss, tps = {}, {}, {}
    for k in sides:
        runs = [[json.loads(l) for l in open(f"{work}/{k}-{p}-r{r}.jsonl")] for r in range(1, rounds + 1)]
        rates = [steady([x["tokens_per_s"] for x in run]) for run in runs]
        tps[k] = max(rates)
        rows[k] = runs[0]
        rss[k] = max(json.load(open(f"{work}/{k}-{p}-r{r}.rss.json"))["maxrss_kib"] * 1024
                     for r in range(1, rounds + 1))
    peer = rows["peer"]
    for k in sides:
        t, flops = tps[k]
        diff = vs = vs_tuned = ""
        if k != "peer":
            dl = [abs(a["loss"] - b["loss"]) for a, b in zip(rows[k], peer)]
            diff = f"{max(dl):.1e} ({dl[0]:.1e})"
            vs = f"**{t / tps['peer'][0]:.2f}×**, **{rss[k] / rss['peer']:.2f}×**"
        if k.startswith("dsft"):
            vs_tuned = f"{t / tps['peer-passive'][0]:.2f}×, {rss[k] / rss['peer-passive']:.2f}×"
        print(f"| {p} | {names[k]} | {t:,.0f} | {rss[k] / 2**20:,.0f} MiB | {100 * flops / peak[p]:.0f}% | {diff} | {vs} | {vs_tuned} |")
print()
for p in precisions:
    for k, label in (("dsft", "dsft: "), ("peer", "eager:")):
        run = [json.loads(l) for l in open(f"{work}/{k}-{p}-r1.jsonl")]
        print(f"{p} loss, {label} " + " ".join(f"{x['loss']:.4f}" for x in run))
PY
