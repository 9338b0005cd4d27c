#!/usr/bin/env bash
# Tokenizer throughput: dsft's BPE beside Hugging Face's Rust `tokenizers` (npm tokenizers@0.23.2,
# installed into a scratch folder) on the same text in the same run, checking that the ids are
# identical. Text: corpus.json's strings joined with "\n" and repeated REPEAT times (one call),
# and the same strings as a batch. Figures are medians of RUNS timed runs after one warm-up.
#   scripts/bench/tokenizer.sh [deepseek-v3|qwen2|llama3]      (env: REPEAT=20 RUNS=3 BUILD_DIR SCRATCH)
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:-deepseek-v3}
REPEAT=${REPEAT:-20}
RUNS=${RUNS:-3}
FIX=$(cd "${DSFT_FIXTURES_DIR:-../shared/fixtures}" && pwd)/tokenizers
BUILD_DIR=${BUILD_DIR:-build-bench}
SCRATCH=${SCRATCH:-${TMPDIR:-/tmp}/dsft-bench-tokenizer}

if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -DDSFT_BENCH=ON >/dev/null  # keep the other settings of an existing build
else
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSFT_BENCH=ON -DDSFT_WITH_TORCH=OFF \
    -DDSFT_TESTS=OFF >/dev/null
fi
ninja -C "$BUILD_DIR" -j2 dsft_bench_tokenizer >/dev/null

mkdir -p "$SCRATCH"
if [ ! -f "$SCRATCH/node_modules/tokenizers/package.json" ]; then
  (cd "$SCRATCH" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm install --no-audit --no-fund --silent tokenizers@0.23.2 >/dev/null)
fi
cp scripts/bench/tokenizer_hf.js "$SCRATCH/"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
DSFT=$("$BUILD_DIR/bench/dsft_bench_tokenizer" "$FIX/$NAME" "$FIX/corpus.json" "$REPEAT" "$RUNS" "$SCRATCH/dsft-ids")
HF_SINGLE=$(cd "$SCRATCH" && RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1 \
  node tokenizer_hf.js single "$FIX/$NAME/tokenizer.json" "$FIX/corpus.json" "$REPEAT" "$RUNS" "$SCRATCH/hf-ids.single.json")
HF_BATCH=$(cd "$SCRATCH" && RAYON_NUM_THREADS=$(nproc) \
  node tokenizer_hf.js batch "$FIX/$NAME/tokenizer.json" "$FIX/corpus.json" "$REPEAT" "$RUNS" "$SCRATCH/hf-ids.batch.json")

cmp -s "$SCRATCH/dsft-ids.single.json" "$SCRATCH/hf-ids.single.json" || { echo "ids differ (single text)"; exit 1; }
cmp -s "$SCRATCH/dsft-ids.batch.json" "$SCRATCH/hf-ids.batch.json" || { echo "ids differ (batch)"; exit 1; }

NAME=$NAME node -e '
const [d, hs, hb] = process.argv.slice(1).map(JSON.parse);
const f = (x) => x.toFixed(2);
console.log(`tokenizer ${process.env.NAME}: ${(d.bytes / 1e6).toFixed(2)} MB, ${d.tokens} tokens, ids identical`);
console.log(`load:            dsft ${f(d.load_s)} s   HF ${f(hs.load_s)} s`);
console.log(`single thread:   dsft ${f(d.single_mb_s)} MB/s (${f(d.single_mb_per_cpu_s)} MB per CPU s)   HF ${f(hs.single_mb_s)} MB/s (${f(hs.single_mb_per_cpu_s)} MB per CPU s)   dsft/HF ${f(d.single_mb_s / hs.single_mb_s)}x wall, ${f(d.single_mb_per_cpu_s / hs.single_mb_per_cpu_s)}x CPU`);
console.log(`per string, 1 thread: dsft ${f(d.per_string_mb_s)} MB/s`);
console.log(`batch, ${d.threads} threads: dsft ${f(d.batch_mb_s)} MB/s (${f(d.batch_cpu_s_per_wall_s)} cores busy, ${f(d.batch_mb_s / d.per_string_mb_s)}x its per-string single thread, CPU efficiency ${f(d.batch_cpu_efficiency)})   HF ${f(hb.batch_mb_s)} MB/s (${f(hb.batch_cpu_s_per_wall_s)} cores busy)`);
' "$DSFT" "$HF_SINGLE" "$HF_BATCH"
