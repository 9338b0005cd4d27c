#!/usr/bin/env bash
# Ingest throughput (MB of input per second, one core) and peak memory (max RSS) on generated CSV
# and JSONL at two input sizes, to show that memory stays flat as the input grows.
#   scripts/bench/ingest.sh [path/to/dsft]        (default: build/dsft, a Release build)
#   SIZES_MB="100 400" WORK=/tmp/dsft-bench-ingest OUT_DIR=/dev/shm scripts/bench/ingest.sh
# Inputs are generated once into $WORK and reused; they are read from a warm page cache. The
# output goes to $OUT_DIR (default /dev/shm when present) so that the figure is ingest, not the
# disk: the output is fsync'ed before its rename, which on a slow disk dominates the wall time.
# "CPU MB/s" divides the input by user+sys time: the single-core figure on a busy machine.
set -euo pipefail
DSFT=${1:-build/dsft}
WORK=${WORK:-/tmp/dsft-bench-ingest}
SIZES_MB=${SIZES_MB:-"100 400"}
PY=${PY:-python3}
OUT_DIR=${OUT_DIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo "$WORK")}
mkdir -p "$WORK"
[ -x "$DSFT" ] || { echo "no dsft binary at $DSFT (build it: scripts/build)" >&2; exit 1; }

# CSV rows: id,name,spec,description (some quoted with commas, quotes and newlines; mixed
# Chinese/English). JSONL rows: {"text": ..., "lang": ...}.
gen() {  # gen csv|jsonl MB PATH
  "$PY" - "$1" "$2" "$3" <<'PY'
import json, sys
kind, mb, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
target = mb * 1000 * 1000
specs = ["M3 不锈钢，耐腐蚀", "aluminium, light", 'steel "grade A"', "铝合金\n轻便耐用", "brass"]
words = "the widget is made for daily use and resists corrosion in salt water 产品 采用 优质 材料 制造".split()
with open(path, "w", encoding="utf-8", newline="") as f:
    size, i, buf = 0, 0, []
    if kind == "csv":
        buf.append("id,name,spec,description\n")
    while size < target:
        desc = " ".join(words[(i + k) % len(words)] for k in range(12 + i % 9))
        if kind == "csv":
            spec = specs[i % len(specs)]
            if any(c in spec for c in ',"\n'):
                spec = '"' + spec.replace('"', '""') + '"'
            line = f"P{i:08d},产品{i},{spec},{desc}\n"
        else:
            line = json.dumps({"text": f"产品{i}: {desc}", "lang": "zh"}, ensure_ascii=False) + "\n"
        buf.append(line)
        size += len(line.encode("utf-8"))
        i += 1
        if len(buf) >= 10000:
            f.write("".join(buf)); buf = []
    f.write("".join(buf))
PY
}

run() {  # run LABEL INPUT [ingest options...]
  local label=$1 input=$2
  shift 2
  local bytes
  bytes=$(stat -c %s "$input")
  /usr/bin/time -v "$DSFT" ingest "$input" -o "$OUT_DIR/dsft-bench-out.jsonl" "$@" 2> "$WORK/time.txt" > /dev/null
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time.txt")
  cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  awk -v l="$label" -v b="$bytes" -v w="$wall" -v c="$cpu" -v r="$rss" -v o="$(stat -c %s "$OUT_DIR/dsft-bench-out.jsonl")" \
    'BEGIN { printf "| %-30s | %6.0f | %6.0f | %6.2f | %6.2f | %7.1f | %7.1f | %7.1f |\n", l, b/1e6, o/1e6, w, c, b/1e6/w, b/1e6/c, r/1024 }'
}

echo "| input                          | in MB  | out MB | wall s | CPU s  | MB/s    | CPU MB/s | RSS MiB |"
echo "| ------------------------------ | ------ | ------ | ------ | ------ | ------- | ------- | ------- |"
for mb in $SIZES_MB; do
  [ -s "$WORK/products-$mb.csv" ] || gen csv "$mb" "$WORK/products-$mb.csv"
  [ -s "$WORK/records-$mb.jsonl" ] || gen jsonl "$mb" "$WORK/records-$mb.jsonl"
  run "CSV $mb MB, --template" "$WORK/products-$mb.csv" --template '产品{id}（{name}）的规格是{spec}。{description}'
  run "CSV $mb MB, column lines" "$WORK/products-$mb.csv"
  run "JSONL $mb MB, text records" "$WORK/records-$mb.jsonl"
done
rm -f "$OUT_DIR/dsft-bench-out.jsonl" "$WORK/time.txt"
