#!/usr/bin/env bash
# Training throughput (target + prompt tokens per second, median over the logged steps after the
# first) and peak memory (max RSS) of `dsft train` on configs/tiny.yaml variants: fp32, bf16,
# gradient checkpointing, QLoRA NF4, full fine-tuning.
#   scripts/bench/train.sh [path/to/dsft]     (default: build/dsft, a Release build; run from the root)
#   STEPS=96 WORK=/tmp/dsft-bench-train scripts/bench/train.sh
# The tiny model (and its tokenizer) is created once in $WORK/model and reused.
set -euo pipefail
DSFT=${1:-build/dsft}
WORK=${WORK:-/tmp/dsft-bench-train}
STEPS=${STEPS:-96}
PY=${PY:-python3}
[ -x "$DSFT" ] || { echo "no dsft binary at $DSFT (build it: scripts/build)" >&2; exit 1; }
mkdir -p "$WORK"

run() {  # run NAME key=value...
  local name=$1; shift
  rm -rf "$WORK/$name"
  "$DSFT" train --config configs/tiny.yaml model_name_or_path="$WORK/model" output_dir="$WORK/$name" \
    max_steps="$STEPS" eval_steps=0 save_steps=0 val_size=0 logging_steps=1 "$@" > "$WORK/$name.log" 2>&1
  "$PY" - "$name" "$WORK/$name/metrics.jsonl" <<'PY'
import json, statistics, sys
name, path = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if '"loss"' in l]
tps = statistics.median(r["tokens_per_s"] for r in rows[1:])
mem = max(r.get("mem", 0) for r in rows)
print(f"| {name} | {tps:,.0f} | {mem / 2**20:,.0f} MiB |")
PY
}

echo "| variant | tokens/s (median) | peak RSS |"
echo "| --- | --- | --- |"
run lora-fp32
run lora-bf16 bf16=true
run lora-fp32-checkpointing gradient_checkpointing=true
run qlora-nf4 finetuning_type=qlora quantization=nf4
run full-fp32 finetuning_type=full
