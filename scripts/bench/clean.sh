#!/usr/bin/env bash
# Clean throughput: `dsft clean` against the usual Python pipeline (scripts/bench/clean_peer.py:
# BeautifulSoup, re, langdetect, numpy MinHash) on the same synthetic corpus, in one run, plus the
# PII recall/precision of both on the labelled set.
#
#   scripts/bench/clean.sh [BUILD_DIR=build] [MB=50]
#
# Needs Debian's python3-bs4 python3-langdetect python3-numpy for /usr/bin/python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MB=${2:-50}
DSFT=$BUILD/dsft
DIR=${BENCH_DIR:-/tmp/dsft-bench-clean}
LABELLED=tests/data/fixtures/clean/pii_labelled.jsonl
mkdir -p "$DIR"
[ -x "$DSFT" ] || { echo "no $DSFT: build it first (ninja -C $BUILD dsft dsft_test_data)" >&2; exit 1; }

/usr/bin/python3 scripts/bench/clean_gen.py corpus --mb "$MB" -o "$DIR/records.jsonl"
bytes=$(stat -c %s "$DIR/records.jsonl")
records=$(wc -l < "$DIR/records.jsonl")

# The same job for both: languages zh,en, the 0.9/0.05/0.05 split, every other setting at its default.
seconds() { /usr/bin/time -f "%e" -o "$DIR/time" "$@" > /dev/null 2>> "$DIR/log"; cat "$DIR/time"; }
: > "$DIR/log"
t_dsft=$(seconds "$DSFT" clean "$DIR/records.jsonl" -o "$DIR/dsft.jsonl" --rejects "$DIR/dsft.rejects.jsonl" \
  --report "$DIR/dsft.report.json" --languages zh,en --split 0.9,0.05,0.05)
t_dsft1=$(seconds "$DSFT" clean "$DIR/records.jsonl" -o "$DIR/dsft1.jsonl" --rejects "$DIR/dsft1.rejects.jsonl" \
  --report "$DIR/dsft1.report.json" --languages zh,en --split 0.9,0.05,0.05 --threads 1)
t_peer=$(seconds /usr/bin/python3 scripts/bench/clean_peer.py "$DIR/records.jsonl" -o "$DIR/peer.jsonl" \
  --rejects "$DIR/peer.rejects.jsonl" --report "$DIR/peer.report.json")
cmp -s "$DIR/dsft.jsonl" "$DIR/dsft1.jsonl" || { echo "dsft output differs between 1 and all threads" >&2; exit 1; }

echo "corpus: $records records, $(awk "BEGIN{printf \"%.1f\", $bytes/1048576}") MB ($DIR/records.jsonl)"
awk -v b="$bytes" -v d="$t_dsft" -v d1="$t_dsft1" -v p="$t_peer" -v cores="$(nproc)" 'BEGIN {
  printf "%-34s %8s %10s %9s\n", "pipeline", "seconds", "MB/s", "speed-up";
  printf "%-34s %8.1f %10.2f %9s\n", "python peer (1 process)", p, b/1048576/p, "1x";
  printf "%-34s %8.1f %10.2f %8.1fx\n", "dsft clean --threads 1", d1, b/1048576/d1, p/d1;
  printf "%-34s %8.1f %10.2f %8.1fx\n", "dsft clean (" cores " threads)", d, b/1048576/d, p/d }'
/usr/bin/python3 - "$DIR" <<'EOF'
import json, sys
d = sys.argv[1]
r = json.load(open(d + "/dsft.report.json")); p = json.load(open(d + "/peer.report.json"))
print("dsft: %d in, %d kept, rejected %s, PII masked %d" % (r["input"]["records"], r["output"]["records"],
      r["rejected"]["by_filter"], sum(r["pii_masked"].values())))
print("peer: %d in, %d kept, rejected %s, PII masked %d" % (p["input"], p["output"], p["rejected"], sum(p["pii_masked"].values())))
EOF
echo "PII on $LABELLED (overlap with the same type counts):"
if [ -x "$BUILD/tests/data/dsft_test_data" ]; then
  echo -n "  dsft: "; "$BUILD/tests/data/dsft_test_data" --gtest_filter=PiiLabelled.* | grep '^overall' || true
fi
echo -n "  peer: "; /usr/bin/python3 scripts/bench/clean_peer.py --eval-pii "$LABELLED" | grep '^overall'
