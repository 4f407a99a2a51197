#!/bin/sh
# `npm run test:browser`: the browser tests (node's test runner, Playwright driving Debian's
# Chromium) against the `yakk` binary in YAKK_BIN (default: the debug build in the target
# folder). They run in a network namespace of their own, so nothing they do can leave the
# machine: loopback for the pages and the signalling, plus one veth pair with a private test
# address (10.222.0.1) and a default route into it, because Chromium gathers no ICE candidate on
# loopback addresses nor on a machine without a default route. Root (CI) or unprivileged user
# namespaces (`unshare -rn`) are needed.
set -eu
cd "$(dirname "$0")/../.."
if [ "${YAKK_NETNS:-}" != inside ]; then
  if [ "$(id -u)" = 0 ]; then
    exec env YAKK_NETNS=inside unshare --net sh "$0" "$@"
  fi
  exec env YAKK_NETNS=inside unshare --map-root-user --net sh "$0" "$@"
fi
ip link set lo up
ip link add yakk0 type veth peer name yakk1
ip addr add 10.222.0.1/24 dev yakk0
ip link set yakk0 up
ip link set yakk1 up
ip route add default via 10.222.0.2 dev yakk0
if [ "$#" -gt 0 ]; then
  exec node --test --test-concurrency=1 "$@"
fi
exec node --test --test-concurrency=1 test/browser/
