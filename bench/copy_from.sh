#!/bin/bash
# A multi-stage build's `COPY --from` per tier, against BuildKit in the
# same run (issue 16): a builder stage on a Debian minbase writes one file
# and the final busybox stage copies it out. Per round and tier, on a
# fresh store with the Debian base made in it (untimed, then `sync`): the
# whole build's time, and rbuild's own timing of the COPY --from step (its
# JSON progress). In the copy and chroot tiers the step reads the builder
# stage's tree where it is (lent out of the store) instead of copying the
# whole stage root, which is what it did before 2026-12-04. BuildKit is
# Debian's docker.io in a private dockerd (`docker build --no-cache
# --network host`) with the same base (`docker import`).
#
#   bench/copy_from.sh [ROUNDS]   (default 3; root; TIERS="default copy chroot")
# Raw runs: bench/results/<UTC>-copy_from.txt.
ROUNDS=${1:-3}
BENCH_NO_BUILDAH=1
. "$(dirname "$0")/common.sh"
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
TIERS=${TIERS:-default copy chroot}
start_buildkit
[ -n "$BUILDKIT" ] || { echo "BuildKit (Debian's docker.io) did not start" >&2; exit 2; }

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
raw="$here/bench/results/$stamp-copy_from.txt"
mkdir -p "$here/bench/results" "$work/logs" "$work/empty"
echo "# tree $(git -C "$here" rev-parse --short HEAD); ROUNDS=$ROUNDS; TIERS=$TIERS; $(uname -r), $(nproc) cores" > "$raw"

debian_bench_base

# dockerfile TAG: the two stages, the builder's step new to the cache.
dockerfile() {
  printf 'FROM debian-bench:1 AS builder\nRUN mkdir /out && echo %s > /out/app\n' "$1"
  printf 'FROM busybox\nCOPY --from=builder /out/app /app\n'
}
flags() {
  case "$1" in
    chroot) echo "--isolation chroot" ;;
    *) echo "" ;;
  esac
}
# The COPY --from is the build's second step (id 2).
copy_step() { grep -o '"id":2,"seconds":[0-9.]*,"type":"done"' "$1" | sed 's/.*"seconds":\([0-9.]*\).*/\1/'; }

# BuildKit unpacks an imported image on its first use: once, untimed.
dockerfile warm > "$work/t.Dockerfile"
DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache --network host -f "$work/t.Dockerfile" -t t "$work/empty" >/dev/null

r=0
while [ "$r" -lt "$ROUNDS" ]; do
  for tier in $TIERS; do
    snapshots=; [ "$tier" = copy ] && snapshots=copy
    rm -rf "$work/root"
    # shellcheck disable=SC2046
    RBUILD_SNAPSHOTS=$snapshots "$RBUILD" build $(flags "$tier") -f "$work/DebianBase.Dockerfile" \
      --root "$work/root" -t debian-bench:1 "$work/ctx" >"$work/logs/base.log" 2>&1 \
      || { cat "$work/logs/base.log" >&2; exit 1; }
    dockerfile "r$r-$tier" > "$work/t.Dockerfile"
    sync
    t0=$(now)
    # shellcheck disable=SC2046
    RBUILD_SNAPSHOTS=$snapshots "$RBUILD" build --progress=json $(flags "$tier") -f "$work/t.Dockerfile" \
      --root "$work/root" -t t "$work/ctx" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; exit 1; }
    total=$(echo "$(now) - $t0" | bc)
    step=$(copy_step "$work/last.log")
    echo "time rbuild-$tier $r total=$total copy_from=$step" >> "$raw"
    echo "$total" >> "$work/rbuild-$tier.total"
    echo "$step" >> "$work/rbuild-$tier.step"
  done
  dockerfile "r$r-buildkit" > "$work/t.Dockerfile"
  sync
  t0=$(now)
  DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache --network host -f "$work/t.Dockerfile" \
    -t t "$work/empty" >/dev/null
  total=$(echo "$(now) - $t0" | bc)
  echo "time buildkit $r total=$total" >> "$raw"
  echo "$total" >> "$work/buildkit.total"
  r=$((r+1))
done

{
  kb=$(median < "$work/buildkit.total")
  echo "a two-stage build (Debian builder, COPY --from into busybox), median of $ROUNDS rounds:"
  printf '  BuildKit         build %6.3f s\n' "$kb"
  for tier in $TIERS; do
    total=$(median < "$work/rbuild-$tier.total")
    step=$(median < "$work/rbuild-$tier.step")
    printf '  rbuild %-8s  build %6.3f s  / BuildKit %.2f   COPY --from step %6.1f ms\n' \
      "$tier" "$total" "$(echo "$total / $kb" | bc -l)" "$(echo "$step * 1000" | bc -l)"
  done
} | tee -a "$raw"
