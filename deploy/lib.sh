# What deploy/try-image.sh and deploy/try-compose.sh share; sourced, from the repository's root.
# Sets YAKK_BIN and work (a fresh folder); the caller's EXIT trap calls finish_work.

YAKK_BIN=$(readlink -f "${YAKK_BIN:-$( [ -x target/release/yakk ] && echo target/release/yakk || echo target/debug/yakk)}")
[ -x "$YAKK_BIN" ] || { echo "no yakk at $YAKK_BIN: build it or set YAKK_BIN" >&2; exit 1; }
work=$(mktemp -d)
failed=false
sender=

say() { printf '== %s\n' "$*"; }
fail() {
  failed=true
  printf 'FAILED: %s (files in %s)\n' "$*" "$work" >&2
  exit 1
}

# Stops the sender if it still runs; removes the folder unless something failed (its files
# are for looking into the failure).
finish_work() {
  [ -n "$sender" ] && kill "$sender" 2>/dev/null
  $failed || rm -rf "$work"
}

# send_file_through ARGS...: `yakk filesend --json ARGS FILE` and `yakk filereceive --json --yes
# ARGS CODE` on this machine (signalling from YAKK_SIGNAL), a 3 MB file; fails unless it arrives
# intact. Their events are in $work/send.out and $work/receive.out.
send_file_through() {
  head -c 3000000 /dev/urandom >"$work/sent.bin"
  mkdir -p "$work/in"
  "$YAKK_BIN" filesend --json "$@" "$work/sent.bin" >"$work/send.out" 2>"$work/send.err" &
  sender=$!
  local code=
  for _ in $(seq 100); do
    code=$(sed -n 's/.*"event":"code".*"code":"\([^"]*\)".*/\1/p' "$work/send.out" | head -1)
    [ -n "$code" ] && break
    sleep 0.1
  done
  [ -n "$code" ] || { cat "$work/send.out" "$work/send.err"; fail "the sender printed no code"; }
  (cd "$work/in" && YAKK_CODE="$code" timeout 60 "$YAKK_BIN" filereceive --json --yes "$@" \
    >"$work/receive.out" 2>"$work/receive.err") \
    || { cat "$work/receive.out" "$work/receive.err"; fail "filereceive"; }
  local status=0
  wait "$sender" || status=$?
  sender=
  [ "$status" = 0 ] || fail "filesend exited $status"
  cmp "$work/sent.bin" "$work/in/sent.bin" || fail "the received file differs"
}
