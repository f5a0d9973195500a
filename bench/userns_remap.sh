#!/usr/bin/env bash
# What remapping a RUN step's ids costs (issue 12): a 30-step `RUN` chain
# built cold (--no-cache) with --userns-remap=auto and =off, alternating,
# ROUNDS times each; prints the medians and the ratio and keeps the raw
# runs under bench/results/. Needs root (remapping is for real root only).
#
#   bench/userns_remap.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (remapping applies to real root)" >&2; exit 3; }
cargo build --release --quiet
bin=$PWD/target/release/rbuild
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{ echo "FROM busybox"; for i in $(seq 1 30); do echo "RUN echo $i > /dev/null"; done; } > "$work/Dockerfile"
"$bin" build --root "$work/root" -q "$work" >/dev/null
"$bin" info --root "$work/root" | grep -E '^(tier|step ids|probe remap)' || true
out=bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)-userns-remap.txt
{
    echo "# bench/userns_remap.sh $rounds on $(uname -n), $(nproc) cores, kernel $(uname -r)"
    echo "# mode milliseconds (30-step RUN chain, --no-cache)"
    for _ in $(seq 1 "$rounds"); do
        for mode in auto off; do
            start=$(date +%s%N)
            "$bin" build --root "$work/root" --no-cache --userns-remap="$mode" -q "$work" >/dev/null
            end=$(date +%s%N)
            echo "$mode $(((end - start) / 1000000))"
        done
    done
} > "$out"
python3 - "$out" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    mode, ms = line.split()
    runs.setdefault(mode, []).append(int(ms))
on, off = statistics.median(runs["auto"]), statistics.median(runs["off"])
print(f"remapped {on:.0f} ms, host root {off:.0f} ms, ratio {on / off:.3f}, "
      f"{(on - off) / 30:.2f} ms per step")
PY
echo "raw runs: $out"
