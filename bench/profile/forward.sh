#!/bin/bash
# One 1 GiB push through `yakk server` / `yakk client` on loopback: throughput, CPU ticks
# (1/100 s) of each peer during the push, peak RSS of each peer. With `perf` as the third
# argument, both peers are recorded (perf record --call-graph dwarf) into OUTDIR.
#
#   bench/profile/forward.sh YAKK OUTDIR [perf]
#
# Run from the repository root; uses ports 47001/47002 on 127.0.0.1.
set -e
Y=$1; OUT=$2; PERF=$3
[ -x "$Y" ] && [ -n "$OUT" ] || { echo "usage: $0 YAKK OUTDIR [perf]" >&2; exit 2; }
mkdir -p "$OUT"
python3 bench/loadgen.py target --port 47001 > "$OUT/target.json" &
TGT=$!
trap 'kill $TGT $OWN $JOI 2>/dev/null || true' EXIT
sleep 0.5
"$Y" server -p 47001 --json --ice-ip 127.0.0.1 > "$OUT/owner.json" 2> "$OUT/owner.err" &
OWN=$!
for _ in $(seq 100); do grep -q '"code"' "$OUT/owner.json" && break; sleep 0.1; done
CODE=$(python3 -c 'import json,sys; print(next(json.loads(l)["code"] for l in open(sys.argv[1]) if "\"code\"" in l))' "$OUT/owner.json")
YAKK_CODE=$CODE "$Y" client -p 47002 --json --ice-ip 127.0.0.1 > "$OUT/joiner.json" 2> "$OUT/joiner.err" &
JOI=$!
for _ in $(seq 100); do grep -q '"listening"' "$OUT/joiner.json" && break; sleep 0.1; done
if [ -n "$PERF" ]; then
  perf record -F 999 -g --call-graph dwarf,16384 -o "$OUT/owner.perf" -p $OWN 2>/dev/null &
  P1=$!
  perf record -F 999 -g --call-graph dwarf,16384 -o "$OUT/joiner.perf" -p $JOI 2>/dev/null &
  P2=$!
  sleep 1
fi
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
c0o=$(ticks $OWN); c0j=$(ticks $JOI)
python3 bench/loadgen.py send 127.0.0.1:47002 --bytes 1073741824 --conns 1
c1o=$(ticks $OWN); c1j=$(ticks $JOI)
echo "cpu ticks owner $((c1o - c0o)) joiner $((c1j - c0j))"
echo "peak rss owner $(awk '/VmHWM/{print $2, $3}' /proc/$OWN/status) joiner $(awk '/VmHWM/{print $2, $3}' /proc/$JOI/status)"
if [ -n "$PERF" ]; then kill -INT $P1 $P2; wait $P1 $P2 2>/dev/null || true; fi
