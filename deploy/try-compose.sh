#!/usr/bin/env bash
# Runs deploy/compose.yaml with a compose tool and checks the rendezvous it starts:
#   - the file loads without TURN_SECRET (the coturn profile off);
#   - the signalling server answers over TLS with the certificate files from ./certs: the
#     browser page at `/` and `/metrics`;
#   - two yakk peers on this machine, both --relay-only, move a file intact through it: over
#     wss://, with credentials for its own TURN relay (UDP), on a relayed path.
# With --coturn, the file as its top says to change it for coturn (the coturn service, and
# `yakk signal` handing out credentials for it): coturn's start refuses an empty TURN_SECRET,
# and with one the peers' file goes through coturn.
#
# What differs from a real deployment, so that nothing leaves this machine:
#   - the published ports are bound to 127.0.0.1 (the file binds every address);
#   - the name is localhost (not rendezvous.example.org) and PUBLIC_IP is 127.0.0.1, with a
#     self-signed certificate for localhost that the peers trust through SSL_CERT_FILE;
#   - the relay is allowed to relay to private and loopback peers (--turn-allow-private-peers);
#   - without --coturn, the coturn service (a profile) is left out: podman-compose 1.0.3
#     (Debian 12's) starts every service whatever its profiles;
#   - with --coturn, coturn listens and relays on 127.0.0.1 only and may relay to loopback
#     peers (--listening-ip, --relay-ip, --allow-loopback-peers instead of denying 127/8);
#   - the image is the one deploy/try-image.sh built (yakk-try:latest), not built again.
# It binds 127.0.0.1 ports 443/tcp, 3478-3479/udp, 3479/tcp and 49160-49200/udp.
#
# Usage: deploy/try-compose.sh [--coturn]
# Environment:
#   COMPOSE   the compose command (default: podman-compose if installed, else docker compose)
#   IMAGE     the image to run (default: localhost/yakk-try:latest, from deploy/try-image.sh)
#   COTURN_IMAGE  with --coturn, an image to run instead of the file's coturn/coturn:4.6 (say,
#             one made here from Debian's coturn package where no registry can be reached)
#   YAKK_BIN  the host's yakk for the two peers (default: target/release/yakk, else debug)
# With podman, engine settings go in a file named by CONTAINERS_CONF (say, runtime = "runc" under
# [engine] where crun refuses hybrid cgroups, default_ulimits under [containers]).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${COMPOSE:-}" ]; then
  if command -v podman-compose >/dev/null; then COMPOSE=podman-compose; else COMPOSE="docker compose"; fi
fi
read -r -a compose <<< "$COMPOSE"
coturn=false
[ "${1:-}" = "--coturn" ] && coturn=true
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
  deploy/compose.yaml >"$work/deploy/loopback.yaml"
[ "$(grep -c '"127.0.0.1:' "$work/deploy/loopback.yaml")" = "$(grep -cE '^\s+- "[0-9]' deploy/compose.yaml)" ] \
  || fail "not every published port of compose.yaml was bound to 127.0.0.1"
printf 'services:\n  signal:\n    image: %s\n' "$IMAGE" >"$work/deploy/image.yaml"
if $coturn; then
  # What the top of the file says: the three --turn-* lines of `signal` replaced by coturn's
  # URLs, the secret in its environment, its relay ports dropped.
  sed -E -e '/^\s+- --turn-(listen|relay-ip|ports)=/d' \
    -e 's/^(\s+- --stun=.*)$/\1\n      - --turn=turn:localhost:3479?transport=udp\n      - --turn=turn:localhost:3479?transport=tcp/' \
    -e 's/^(\s+)cap_add: \[SYS_PTRACE\]$/&\n\1environment:\n\1  YAKK_TURN_SECRET: ${TURN_SECRET}/' \
    -e '/"127\.0\.0\.1:(3479:3479|49160-49200:49160-49200)\//d' \
    -e 's/^(\s+- --listening-port=3479)$/\1\n      - --listening-ip=127.0.0.1\n      - --relay-ip=127.0.0.1\n      - --allow-loopback-peers/' \
    -e '/--denied-peer-ip=127\.0\.0\.0-127\.255\.255\.255/d' \
    "$work/deploy/loopback.yaml" >"$work/deploy/compose.yaml"
  [ "$(grep -cE -- '^\s+- --turn=turn:localhost' "$work/deploy/compose.yaml")" = 2 ] && grep -q YAKK_TURN_SECRET "$work/deploy/compose.yaml" \
    && grep -q -- '--allow-loopback-peers' "$work/deploy/compose.yaml" || fail "compose.yaml is not laid out as try-compose.sh expects"
  [ -n "${COTURN_IMAGE:-}" ] && printf '  turn:\n    image: %s\n' "$COTURN_IMAGE" >>"$work/deploy/image.yaml"
  [ "${compose[0]}" = podman-compose ] || compose+=(--profile coturn)
else
  sed -E -e 's/^(\s+- --turn-ports=.*)$/\1\n      - --turn-allow-private-peers/' -e '/^  turn:/,$d' \
    "$work/deploy/loopback.yaml" >"$work/deploy/compose.yaml"
  grep -q -- '--turn-allow-private-peers' "$work/deploy/compose.yaml" || fail "no --turn-ports line in compose.yaml"
fi
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

compose_up() {
  up=true
  (cd "$work/deploy" && "${compose[@]}" -p yakktry -f compose.yaml -f image.yaml up -d --no-build) \
    >>"$work/up.log" 2>&1 || { tail -20 "$work/up.log"; fail "compose up (up.log)"; }
}
if $coturn; then
  compose_up
  turn_logs() { (cd "$work/deploy" && "${compose[@]}" -p yakktry -f compose.yaml -f image.yaml logs turn) 2>&1; }
  for _ in $(seq 50); do
    turn_logs | grep -q 'set TURN_SECRET in .env' && break
    sleep 0.2
  done
  turn_logs | grep -q 'set TURN_SECRET in .env' || fail "coturn started without TURN_SECRET, or said nothing"
  (cd "$work/deploy" && "${compose[@]}" -p yakktry -f compose.yaml -f image.yaml down) >>"$work/up.log" 2>&1
  say "coturn refuses to start without TURN_SECRET, and says so"
  echo "TURN_SECRET=$(openssl rand -hex 32)" >>"$work/deploy/.env"
fi
say "compose up ($COMPOSE, image $IMAGE)"
compose_up
export SSL_CERT_FILE="$work/deploy/certs/fullchain.pem"
for _ in $(seq 50); do
  curl -fsS --cacert "$SSL_CERT_FILE" "https://localhost:443/" -o "$work/index.html" 2>/dev/null && break
  sleep 0.2
done
[ -s "$work/index.html" ] || { grep -i error "$work/up.log" | tail -3; fail "no page at https://localhost:443/ (up.log)"; }
grep -q 'app.js' "$work/index.html" || fail "/ is not the browser page"
# The relay's figures, unless coturn relays.
metric=yakk_signal_turn
$coturn && metric=yakk_signal_
curl -fsS --cacert "$SSL_CERT_FILE" "https://localhost:443/metrics" | grep -q "^$metric" || fail "/metrics has no $metric figures"
say "the page and /metrics over TLS, with the certificate from ./certs"

export YAKK_SIGNAL=wss://localhost:443
send_file_through --relay-only
for side in send receive; do
  grep '"event":"connected"' "$work/$side.out" | grep '"path":"relay"' | grep -q '"relay":"udp"' \
    || fail "$side: not connected on a path relayed over UDP"
done
if $coturn; then
  say "a 3 MB file went through coturn (UDP), intact"
else
  say "a 3 MB file went through the rendezvous's own relay (UDP), intact"
fi
say "OK"
