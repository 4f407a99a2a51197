#!/bin/bash
# Round trips of 64-byte messages through `yakk server` / `yakk client` on loopback, and the CPU
# each peer spends on them: the latency percentiles (bench/loadgen.py latency) and both peers'
# CPU ticks (1/100 s) over the run. With `perf` as the third argument the joiner is recorded
# (perf record -g) into OUTDIR/joiner-rtt.perf.
#
#   bench/profile/rtt.sh YAKK OUTDIR [perf]        # ROUND_TRIPS=20000 by default
#
# Run from the repository root; uses 127.0.0.1 only (ports chosen by the kernel).
set -e
Y=$1; OUT=$2; PERF=$3
[ -x "$Y" ] && [ -n "$OUT" ] || { echo "usage: $0 YAKK OUTDIR [perf]" >&2; exit 2; }
N=${ROUND_TRIPS:-20000}
mkdir -p "$OUT"
python3 bench/loadgen.py target --port 0 > "$OUT/target.json" &
TGT=$!
trap 'kill $TGT $OWN $JOI 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$OUT/target.json" ] && break; sleep 0.1; done
TPORT=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["listening"])' "$OUT/target.json")
"$Y" server -p "$TPORT" --json --ice-ip 127.0.0.1 > "$OUT/owner.json" 2> "$OUT/owner.err" &
OWN=$!
for _ in $(seq 100); do grep -q '"code"' "$OUT/owner.json" && break; sleep 0.1; done
CODE=$(python3 -c 'import json,sys; print(next(json.loads(l)["code"] for l in open(sys.argv[1]) if "\"code\"" in l))' "$OUT/owner.json")
YAKK_CODE=$CODE "$Y" client -p 0 --json --ice-ip 127.0.0.1 > "$OUT/joiner.json" 2> "$OUT/joiner.err" &
JOI=$!
for _ in $(seq 100); do grep -q '"listening"' "$OUT/joiner.json" && break; sleep 0.1; done
ADDR=$(python3 -c 'import json,sys; print(next(json.loads(l)["address"] for l in open(sys.argv[1]) if "\"listening\"" in l))' "$OUT/joiner.json")
sleep 1
if [ -n "$PERF" ]; then
  perf record -F 2000 -g -o "$OUT/joiner-rtt.perf" -p $JOI 2>/dev/null &
  P=$!
  sleep 0.3
fi
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
c0o=$(ticks $OWN); c0j=$(ticks $JOI)
python3 bench/loadgen.py latency "$ADDR" --count "$N" --size 64
c1o=$(ticks $OWN); c1j=$(ticks $JOI)
echo "cpu ticks for $N round trips: owner $((c1o - c0o)) joiner $((c1j - c0j))"
if [ -n "$PERF" ]; then kill -INT $P; wait $P 2>/dev/null || true; fi
