#!/usr/bin/env bash
# Installs what bench/run.py compares yakk with, on a fresh Debian 12 machine (as root), and
# builds yakk in release. dumbpipe is a large build from crates.io (10+ minutes on 2 cores);
# pass --no-dumbpipe to skip it (the harness then notes it as not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  openssh-server openssh-client socat iproute2 iputils-ping python3 \
  magic-wormhole python3-magic-wormhole-mailbox-server magic-wormhole-transit-relay
cargo build --release --locked -p yakk
# The user-space link emulator, for kernels without sch_netem (run.py uses tc netem if it works).
cargo build --release --manifest-path bench/netem/Cargo.toml
if [[ "${1:-}" != "--no-dumbpipe" ]]; then
  cargo install --locked dumbpipe --root bench/out/tools \
    || echo "dumbpipe did not build; the benchmark will skip it" >&2
fi
echo "ready: python3 bench/run.py --quick   (or without --quick for the full run)"
