#!/usr/bin/env bash
# Runs deploy/compose.yaml with a compose tool and checks the rendezvous it starts:
#   - the file loads without TURN_SECRET (the coturn profile off);
#   - the signalling server answers over TLS with the certificate files from ./certs: the
#     browser page at `/` and `/metrics`;
#   - two yakk peers on this machine, both --relay-only, move a file intact through it: over
#     wss://, with credentials for its own TURN relay (UDP), on a relayed path.
#
# What differs from a real deployment, so that nothing leaves this machine:
#   - the published ports are bound to 127.0.0.1 (the file binds every address);
#   - the name is localhost (not rendezvous.example.org) and PUBLIC_IP is 127.0.0.1, with a
#     self-signed certificate for localhost that the peers trust through SSL_CERT_FILE;
#   - the relay is allowed to relay to private and loopback peers (--turn-allow-private-peers);
#   - the coturn service (a profile) is left out: podman-compose 1.0.3 (Debian 12's) starts
#     every service whatever its profiles;
#   - the image is the one deploy/try-image.sh built (yakk-try:latest), not built again.
# It binds 127.0.0.1 ports 443/tcp, 3478-3479/udp, 3479/tcp and 49160-49200/udp.
#
# Usage: deploy/try-compose.sh
# Environment:
#   COMPOSE   the compose command (default: podman-compose if installed, else docker compose)
#   IMAGE     the image to run (default: localhost/yakk-try:latest, from deploy/try-image.sh)
#   YAKK_BIN  the host's yakk for the two peers (default: target/release/yakk, else debug)
# With podman, engine settings go in a file named by CONTAINERS_CONF (say, runtime = "runc" under
# [engine] where crun refuses hybrid cgroups, default_ulimits under [containers]).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${COMPOSE:-}" ]; then
  if command -v podman-compose >/dev/null; then COMPOSE=podman-compose; else COMPOSE="docker compose"; fi
fi
read -r -a compose <<< "$COMPOSE"
IMAGE=${IMAGE:-localhost/yakk-try:latest}
. deploy/lib.sh
up=false
cleanup() {
  if $up; then
    (cd "$work/deploy" && "${compose[@]}" -p yakktry -f compose.yaml -f image.yaml down >/dev/null 2>&1) || true
  fi
  finish_work
}
trap cleanup EXIT

for port in 443 3478 3479; do
  if ss -Hltnu "( sport = :$port )" | grep -q .; then fail "port $port is in use on this machine"; fi
done

mkdir -p "$work/deploy/certs"
# The loopback copy of the compose file (see the top).
sed -E -e 's/^(\s+- )"([0-9-]+:[0-9-]+\/(tcp|udp))"/\1"127.0.0.1:\2"/' \
  -e 's/rendezvous\.example\.org/localhost/g' \
  -e 's/^(\s+- --turn-ports=.*)$/\1\n      - --turn-allow-private-peers/' \
  -e '/^  turn:/,$d' \
  deploy/compose.yaml >"$work/deploy/compose.yaml"
[ "$(grep -c '"127.0.0.1:' "$work/deploy/compose.yaml")" = "$(grep -cE '^\s+- "[0-9]' deploy/compose.yaml)" ] \
  || fail "not every published port of compose.yaml was bound to 127.0.0.1"
grep -q -- '--turn-allow-private-peers' "$work/deploy/compose.yaml" || fail "no --turn-ports line in compose.yaml"
printf 'services:\n  signal:\n    image: %s\n' "$IMAGE" >"$work/deploy/image.yaml"
echo "PUBLIC_IP=127.0.0.1" >"$work/deploy/.env"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
  -keyout "$work/deploy/certs/privkey.pem" -out "$work/deploy/certs/fullchain.pem" 2>/dev/null
chmod 644 "$work/deploy/certs/"*.pem # readable by uid 10001 in the container

# The file itself, services and profiles as they are: it must load without TURN_SECRET.
cp deploy/compose.yaml "$work/deploy/original.yaml"
# (podman-compose 1.0.3 has no `config`; its --dry-run loads the file and runs nothing.)
load=(config -q)
[ "${compose[0]}" = podman-compose ] && load=(--dry-run -f original.yaml up --no-build)
(cd "$work/deploy" && env -u TURN_SECRET "${compose[@]}" -f original.yaml "${load[@]}") >"$work/config.log" 2>&1 \
  || { tail -5 "$work/config.log"; fail "compose.yaml does not load without TURN_SECRET (config.log)"; }
say "compose.yaml loads without TURN_SECRET"

say "compose up ($COMPOSE, image $IMAGE)"
up=true
(cd "$work/deploy" && "${compose[@]}" -p yakktry -f compose.yaml -f image.yaml up -d --no-build) \
  >"$work/up.log" 2>&1 || { tail -20 "$work/up.log"; fail "compose up (up.log)"; }
export SSL_CERT_FILE="$work/deploy/certs/fullchain.pem"
for _ in $(seq 50); do
  curl -fsS --cacert "$SSL_CERT_FILE" "https://localhost:443/" -o "$work/index.html" 2>/dev/null && break
  sleep 0.2
done
[ -s "$work/index.html" ] || { grep -i error "$work/up.log" | tail -3; fail "no page at https://localhost:443/ (up.log)"; }
grep -q 'app.js' "$work/index.html" || fail "/ is not the browser page"
curl -fsS --cacert "$SSL_CERT_FILE" "https://localhost:443/metrics" | grep -q '^yakk_signal_turn' || fail "/metrics has no relay figures"
say "the page and /metrics over TLS, with the certificate from ./certs"

export YAKK_SIGNAL=wss://localhost:443
send_file_through --relay-only
for side in send receive; do
  grep '"event":"connected"' "$work/$side.out" | grep '"path":"relay"' | grep -q '"relay":"udp"' \
    || fail "$side: not connected on a path relayed over UDP"
done
say "a 3 MB file went through the rendezvous's own relay (UDP), intact"
say "OK"
