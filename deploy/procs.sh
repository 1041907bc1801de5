# What tailor's shell scripts share (deploy/bolt.sh, benches/load.sh, tests/run-all.sh): a scratch
# directory ($tmp, kept when KEEP_TMP is set), background processes stopped at exit (append their
# PIDs to pids), and waiting for a process's line. Sourced: `. deploy/procs.sh`.
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

# wait_for FILE PATTERN: until a line matching PATTERN appears in FILE (10 s at most)
wait_for() {
  for _ in $(seq 100); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  cat "$1" >&2 || true
  return 1
}
