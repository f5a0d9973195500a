#!/bin/sh
# A 5-stage, 20-step Dockerfile (four stages of four RUN steps, built in
# parallel, and a final stage that mounts all four), side by side with
# `buildah build --layers` (overlay storage, chroot isolation) and BuildKit
# (a private dockerd; Debian's docker.io, installed when missing) in one run:
#   cold:   fresh storage each round
#   cached: the same build again on warm storage (every step a cache hit)
# Prints the medians and the ratios rbuild / buildah. Targets (issue 5):
# cached <= 0.1x buildah and under 150 ms; cold <= 0.7x buildah.
#
#   bench/cached_build.sh [ROUNDS]      (default 5; needs root)
ROUNDS=${1:-5}
. "$(dirname "$0")/common.sh"

{
  s=1
  while [ $s -le 4 ]; do
    echo "FROM busybox AS s$s"
    r=1
    while [ $r -le 4 ]; do echo "RUN echo stage$s-step$r > /s$s-$r && sleep 0.2"; r=$((r+1)); done
    s=$((s+1))
  done
  echo "FROM busybox"
  echo "RUN --mount=type=bind,from=s1,target=/m1 --mount=type=bind,from=s2,target=/m2 --mount=type=bind,from=s3,target=/m3 --mount=type=bind,from=s4,target=/m4 cat /m1/s1-4 /m2/s2-4 /m3/s3-4 /m4/s4-4 > /all"
  r=2
  while [ $r -le 4 ]; do echo "RUN echo final-$r >> /all"; r=$((r+1)); done
} > "$work/Dockerfile"
sed 's|^FROM busybox|FROM localhost/busybox:latest|' "$work/Dockerfile" > "$work/Buildah.Dockerfile"
start_buildkit

for f in rbuild buildah buildkit; do : > "$work/$f-cold.times"; : > "$work/$f-cached.times"; done
timed() { # FILE COMMAND...: appends the command's wall time to FILE
  out=$1; shift
  t0=$(now)
  "$@" >"$work/last.log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$work/last.log" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/$out.times"
}
r=0
while [ $r -lt "$ROUNDS" ]; do
  rm -rf "$work/root"
  timed rbuild-cold "$RBUILD" build -f "$work/Dockerfile" --root "$work/root" -t five "$work/ctx"
  timed rbuild-cached "$RBUILD" build -f "$work/Dockerfile" --root "$work/root" -t five "$work/ctx"

  store="$work/buildah-$r"
  B=$(buildah_store "$store")
  timed buildah-cold $B build -q --layers --pull=never --isolation chroot -f "$work/Buildah.Dockerfile" -t five "$work"
  timed buildah-cached $B build -q --layers --pull=never --isolation chroot -f "$work/Buildah.Dockerfile" -t five "$work"
  $B rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$store"

  if [ -n "$BUILDKIT" ]; then
    timed buildkit-cold env DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache --network host -t five "$work"
    timed buildkit-cached env DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network host -t five "$work"
  fi
  r=$((r+1))
done

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
results="$here/bench/results/$stamp-cached_build.txt"
{
echo "# bench/cached_build.sh on $(hostname), $(nproc) cores, $stamp; tree $(git -C "$here" rev-parse --short HEAD); ROUNDS=$ROUNDS"
echo "# buildah: overlay storage, chroot isolation; BuildKit: a private dockerd (Debian docker.io)"
for f in rbuild buildah buildkit; do
  for kind in cold cached; do
    while read -r t; do echo "time $f $kind $t"; done < "$work/$f-$kind.times"
  done
done
echo "5 stages, 20 RUN steps, median of $ROUNDS rounds:"
for kind in cold cached; do
  rb=$(median < "$work/rbuild-$kind.times")
  bb=$(median < "$work/buildah-$kind.times")
  printf '  %-6s rbuild %.3f s   buildah %.3f s   rbuild / buildah = %.3f\n' "$kind" "$rb" "$bb" "$(echo "$rb / $bb" | bc -l)"
  if [ -n "$BUILDKIT" ]; then
    kb=$(median < "$work/buildkit-$kind.times")
    printf '  %-6s                  BuildKit %.3f s  rbuild / BuildKit = %.3f\n' "$kind" "$kb" "$(echo "$rb / $kb" | bc -l)"
  fi
done
} | tee "$results"
echo "raw rounds: $results"
