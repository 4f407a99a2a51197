#!/usr/bin/env bash
# Builds deploy/Dockerfile and checks the image it makes:
#   - it runs as the unprivileged user 10001;
#   - `yakk signal` in it serves the browser page at `/` (not the "build the app" notice);
#   - two yakk peers on this machine (filesend, filereceive) move a file through it intact.
# The container uses the host's network and listens on 127.0.0.1 only.
#
# Usage: deploy/try-image.sh [--standin]
#   --standin  build the three base images here instead of pulling them, for a machine that
#              reaches Debian's mirror, static.rust-lang.org and the npm registry but no container
#              registry: Debian bookworm (debootstrap, minbase), Rust (rustup, the version the
#              Dockerfile names) on it, and Node (this machine's /usr/bin/node and npm) on it.
# Environment:
#   ENGINE      container command (default: podman, else docker), with global flags if needed,
#               e.g. ENGINE="podman --runtime runc" where crun refuses hybrid cgroups
#   CTR_FLAGS   extra flags for build and run, e.g. "--ulimit nofile=4096:4096" where the
#               engine may not raise limits
#   YAKK_BIN    the host's yakk for the two peers (default: target/release/yakk, else debug)
#   PORT        the port on 127.0.0.1 for the container's signalling server (default 26006)
set -euo pipefail
cd "$(dirname "$0")/.."

standin=false
[ "${1:-}" = "--standin" ] && standin=true
ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
read -r -a flags <<< "${CTR_FLAGS:-}"
PORT=${PORT:-26006}
image=yakk-try:latest
name=yakk-try-$$
. deploy/lib.sh
cleanup() {
  $ENGINE rm -f "$name" >/dev/null 2>&1 || true
  finish_work
}
trap cleanup EXIT

build_args=()
if $standin; then
  rust_version=$(sed -n 's/^ARG RUST_IMAGE=rust:\([0-9.]*\)-.*/\1/p' deploy/Dockerfile)
  [ -n "$rust_version" ] || fail "no rust:VERSION in deploy/Dockerfile"
  build_args=(--build-arg NODE_IMAGE=localhost/yakk-standin-node:local
    --build-arg RUST_IMAGE=localhost/yakk-standin-rust:"$rust_version"
    --build-arg RUNTIME_IMAGE=localhost/yakk-standin-debian:bookworm)
fi
have() { $ENGINE image inspect "$1" >/dev/null 2>&1; }
if $standin && have localhost/yakk-standin-rust:"$rust_version" && have localhost/yakk-standin-node:local; then
  say "stand-in base images: kept from an earlier run (remove localhost/yakk-standin-* to remake them)"
elif $standin; then
  say "stand-in base images (Debian bookworm, Rust $rust_version, Node $(node --version))"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" \
    || fail "debootstrap (debootstrap.log)"
  # This machine's own certificate authorities (say, of a TLS-inspecting egress proxy), so that
  # the stand-ins reach what this machine reaches; ca-certificates adds them when installed.
  rm -f "$work/rootfs"/var/cache/apt/archives/*.deb
  mkdir -p "$work/rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  tar -C "$work/rootfs" -c . | $ENGINE import - localhost/yakk-standin-debian:bookworm >/dev/null 2>&1
  mkdir -p "$work/rust" "$work/node"
  cat >"$work/rust/Dockerfile" <<EOF
FROM localhost/yakk-standin-debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:\$PATH
RUN curl -sSf -o /tmp/rustup-init https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
 && chmod +x /tmp/rustup-init && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain $rust_version \
 && rm /tmp/rustup-init
EOF
  $ENGINE build "${flags[@]}" --network host -t localhost/yakk-standin-rust:"$rust_version" "$work/rust" >"$work/rust.log" 2>&1 \
    || fail "the Rust stand-in (rust.log)"
  cp "$(readlink -f "$(command -v node)")" "$work/node/node"
  cp -r "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$work/node/npm"
  cat >"$work/node/Dockerfile" <<'EOF'
FROM localhost/yakk-standin-debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
EOF
  $ENGINE build "${flags[@]}" --network host -t localhost/yakk-standin-node:local "$work/node" >"$work/node.log" 2>&1 \
    || fail "the Node stand-in (node.log)"
fi

say "building the image ($ENGINE; the release build takes minutes)"
start=$(date +%s)
$ENGINE build "${flags[@]}" --network host "${build_args[@]}" -f deploy/Dockerfile -t "$image" . >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; fail "the image build"; }
say "built in $(( $(date +%s) - start )) s; size $($ENGINE image inspect "$image" --format '{{.Size}}') bytes"

user=$($ENGINE run "${flags[@]}" --rm --entrypoint id "$image" -u)
[ "$user" = 10001 ] || fail "the image runs as uid $user, not 10001"
say "runs as uid $user"

$ENGINE run "${flags[@]}" -d --name "$name" --network host "$image" --listen "127.0.0.1:$PORT" >/dev/null
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$PORT/" -o "$work/index.html" 2>/dev/null && break
  sleep 0.2
done
[ -s "$work/index.html" ] || { $ENGINE logs "$name" | tail; fail "no page at http://127.0.0.1:$PORT/"; }
if grep -q 'npm run build' "$work/index.html" || ! grep -q 'app.js' "$work/index.html"; then
  fail "/ is not the browser page"
fi
say "/ serves the browser page"

export YAKK_SIGNAL="ws://127.0.0.1:$PORT"
send_file_through
say "a 3 MB file went through the image's signalling server intact"
say "OK"
