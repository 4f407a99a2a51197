#!/usr/bin/env bash
# One relayed tunnel on loopback, through the relay inside `yakk signal --turn-listen`: both
# sides --relay-only, one lane, N MiB pushed one way through `yakk client` -> `yakk server` into
# a byte-counting sink. Prints the joiner's `connected` event, the setup time (joiner start to
# `connected`) and the throughput. Only 127.0.0.1 is used; every process is stopped at the end.
#
#   bench/relay_loopback.sh                 # the relay leg over UDP
#   LEG=tcp bench/relay_loopback.sh         # over TCP (the peers' bridge)
#   MIB=1024 YAKK=target/release/yakk bench/relay_loopback.sh
#
# Ports: 17000 (signalling), 17479 (relay, UDP and TCP), 50000-50100 (relayed), 17101/17102.
set -euo pipefail
cd "$(dirname "$0")/.."
YAKK=${YAKK:-target/release/yakk}
MIB=${MIB:-256}
LEG=${LEG:-udp}
[ -x "$YAKK" ] || { echo "build first: cargo build --release -p yakk" >&2; exit 2; }
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
YAKK_TURN_SECRET=$secret "$YAKK" signal --listen 127.0.0.1:17000 --turn-listen 127.0.0.1:17479 \
  --turn-allow-private-peers --turn-ports 50000-50100 >"$tmp/signal.log" 2>&1 &
pids+=($!)
python3 - "$tmp/sink" <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 17101)); s.listen(1); s.settimeout(120)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
open(sys.argv[1], "w").write(str(n))
PY
pids+=($!)
sleep 0.5
# REST credentials for the relay (what `yakk signal` hands room members), for the URL below.
read -r user pass < <(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, sys, time
u = "%d:bench" % (time.time() + 600)
print(u, base64.b64encode(hmac.new(sys.argv[1].encode(), u.encode(), hashlib.sha1).digest()).decode())
PY
)
url="turn:127.0.0.1:17479?transport=$LEG"
export YAKK_TURN_PASSWORD=$pass
common=(--relay-only --turn "$url" --turn-user "$user" --ice-ip 127.0.0.1 --json --lanes 1
  --signal ws://127.0.0.1:17000)
"$YAKK" server -p 17101 --pw bench-run "${common[@]}" >"$tmp/owner.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '"code"' "$tmp/owner.log" && break; sleep 0.05; done
code=$(grep -o '"code":"[^"]*"' "$tmp/owner.log" | head -1 | cut -d'"' -f4)
t0=$(date +%s.%N)
"$YAKK" client -p 17102 "${common[@]}" "$code" >"$tmp/joiner.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do grep -q '"connected"' "$tmp/joiner.log" && break; sleep 0.02; done
t1=$(date +%s.%N)
grep '"connected"' "$tmp/joiner.log" || { echo "no connection:"; cat "$tmp/joiner.log"; exit 1; }
python3 - "$MIB" <<'PY'
import socket, sys, time
mib = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", 17102)); s.settimeout(60)
buf = b"x" * (1 << 20); t = time.time()
for _ in range(mib): s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1)
dt = time.time() - t
print("pushed %d MiB in %.2f s: %.1f MiB/s" % (mib, dt, mib / dt))
PY
for _ in $(seq 50); do [ -s "$tmp/sink" ] && break; sleep 0.1; done
echo "setup $(python3 -c "print(round($t1 - $t0, 2))") s; the sink counted $(cat "$tmp/sink" 2>/dev/null || echo '?') bytes"
