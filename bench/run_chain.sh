#!/bin/sh
# A 30-step `RUN true` chain on busybox, cold, side by side in one run:
# rbuild (`rbuild debug run`: probe, base, 30 sandboxed steps, layers, OCI
# layout) against `buildah build --layers` (vfs storage, chroot isolation:
# what works on this VM), each on fresh storage every round, and against
# BuildKit when Debian's docker.io is installed (a private dockerd started
# here with --bridge=none --iptables=false; `docker build --no-cache
# --network host` with the Debian client, whose BuildKit needs no buildx).
# Prints the median of each and the ratios. rbuild has no step cache yet,
# so only cold builds are compared.
#
#   bench/run_chain.sh [ROUNDS]      (default 5; needs root)
ROUNDS=${1:-5}
. "$(dirname "$0")/common.sh"

{ echo "FROM busybox"; i=0; while [ $i -lt 30 ]; do echo "RUN true"; i=$((i+1)); done; } > "$work/Dockerfile"
sed 's|^FROM busybox|FROM localhost/busybox:latest|' "$work/Dockerfile" > "$work/Buildah.Dockerfile"
start_buildkit

: > "$work/rbuild.times"; : > "$work/buildah.times"; : > "$work/buildkit.times"
r=0
while [ $r -lt "$ROUNDS" ]; do
  rm -rf "$work/root" "$work/out"
  t0=$(now)
  "$RBUILD" build -f "$work/Dockerfile" --root "$work/root" -t chain "$work/ctx" >/dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/rbuild.times"

  store="$work/buildah-$r"
  B=$(buildah_store "$store")
  t0=$(now)
  $B build -q --layers --pull=never --isolation chroot -f "$work/Buildah.Dockerfile" -t chain "$work" >/dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/buildah.times"
  $B rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$store"

  if [ -n "$BUILDKIT" ]; then
    t0=$(now)
    DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache --network host -t chain "$work" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc >> "$work/buildkit.times"
  fi
  r=$((r+1))
done

rb=$(median < "$work/rbuild.times")
bb=$(median < "$work/buildah.times")
echo "30 x RUN true, cold, median of $ROUNDS rounds:"
printf '  rbuild   %.3f s\n' "$rb"
printf '  buildah  %.3f s\n' "$bb"
printf '  rbuild / buildah = %.3f\n' "$(echo "$rb / $bb" | bc -l)"
if [ -n "$BUILDKIT" ]; then
  kb=$(median < "$work/buildkit.times")
  printf '  BuildKit %.3f s\n' "$kb"
  printf '  rbuild / BuildKit = %.3f\n' "$(echo "$rb / $kb" | bc -l)"
fi
