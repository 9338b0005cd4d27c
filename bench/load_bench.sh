#!/usr/bin/env bash
# Checkpoint loading: wall time of `dsft forward` on one token for the ~1 GB llama-1gb preset
# (bf16 weights), which is dominated by config parse + mmap + copy into parameters. Compared
# with reading the same bytes (cat to /dev/null) from the page cache.
# Usage: bench/load_bench.sh [path/to/dsft] [workdir]
set -euo pipefail
DSFT=${1:-build/dsft}
WORK=${2:-$(mktemp -d)}
MODEL=$WORK/llama-1gb
RUNS=${RUNS:-5}
if [ ! -f "$MODEL/model.safetensors" ]; then
  "$DSFT" init --arch llama --preset 1gb --dtype bf16 --seed 1 -o "$MODEL" --force
fi
# input_ids I64 [1, 1] = 1
python3 - "$WORK/ids.safetensors" <<'PY'
import json, struct, sys
h = json.dumps({"input_ids": {"dtype": "I64", "shape": [1, 1], "data_offsets": [0, 8]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<q", 1))
PY
size=$(stat -c %s "$MODEL/model.safetensors")
echo "checkpoint: $MODEL/model.safetensors ($((size / 1048576)) MiB)"
cat "$MODEL/model.safetensors" > /dev/null  # warm the page cache
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
best() { sort -g | head -1; }
echo "read (cat, warm cache):      $(for i in $(seq $RUNS); do t cat "$MODEL/model.safetensors"; done | best) s"
for dtype in bfloat16 float32; do
  echo "dsft forward --dtype $dtype: $(for i in $(seq $RUNS); do t "$DSFT" forward --model "$MODEL" --input "$WORK/ids.safetensors" -o "$WORK/out.safetensors" --dtype $dtype; done | best) s (best of $RUNS)"
done
