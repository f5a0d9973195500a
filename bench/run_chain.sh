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
set -eu
ROUNDS=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release --quiet
RBUILD="$here/target/release/rbuild"
command -v buildah >/dev/null || { echo "buildah is not installed (apt-get install buildah)" >&2; exit 2; }
work=/tmp/rbuild-bench-$$; rm -rf "$work"; mkdir -p "$work"
trap 'if [ -f "$work/dockerd.pid" ]; then kill "$(cat "$work/dockerd.pid")"; sleep 2; fi; rm -rf "$work"' EXIT

{ echo "FROM busybox"; i=0; while [ $i -lt 30 ]; do echo "RUN true"; i=$((i+1)); done; } > "$work/Dockerfile"
# buildah's base: the same busybox image rbuild makes, as an OCI layout.
printf 'FROM busybox\n' > "$work/Base.Dockerfile"
"$RBUILD" debug run -f "$work/Base.Dockerfile" --root "$work/base-root" --oci-dir "$work/base" --tag busybox:latest >/dev/null 2>&1
sed 's|^FROM busybox|FROM localhost/busybox:latest|' "$work/Dockerfile" > "$work/Buildah.Dockerfile"

BUILDKIT=
if command -v dockerd >/dev/null && [ -x /usr/bin/docker ]; then
  export DOCKER_HOST="unix://$work/docker.sock"
  dockerd --bridge=none --iptables=false --data-root "$work/docker" --exec-root "$work/docker-exec" \
    -H "$DOCKER_HOST" -p "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  i=0; until /usr/bin/docker info >/dev/null 2>&1 || [ $i -gt 100 ]; do sleep 0.2; i=$((i+1)); done
  skopeo copy -q "oci:$work/base:latest" "docker-archive:$work/base.tar:busybox:latest" >/dev/null
  /usr/bin/docker load -q -i "$work/base.tar" >/dev/null && BUILDKIT=1
fi

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > "$work/rbuild.times"; : > "$work/buildah.times"; : > "$work/buildkit.times"
r=0
while [ $r -lt "$ROUNDS" ]; do
  rm -rf "$work/root" "$work/out"
  t0=$(now)
  "$RBUILD" debug run -f "$work/Dockerfile" --root "$work/root" --oci-dir "$work/out" >/dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/rbuild.times"

  store="$work/buildah-$r"
  B="buildah --root $store/root --runroot $store/run --storage-driver vfs"
  $B pull -q "oci:$work/base:latest" >/dev/null
  $B tag "$($B images -q | head -1)" localhost/busybox:latest
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
