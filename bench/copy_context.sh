#!/bin/sh
# `COPY . /app` of a generated 500 MB, 20,000-file context, end to end to
# an image pushed to a local Docker distribution registry, side by side
# with `buildah build --layers` + `buildah push` (overlay storage, chroot isolation)
# in one run. Each round starts from fresh storage (no hash cache, no
# layers) and pushes to a new repository. Target (issue 6): rbuild <= 0.5x
# buildah.
#
#   bench/copy_context.sh [ROUNDS] [FILES] [MEGABYTES]   (default 3 20000 500; needs root)
ROUNDS=${1:-3}
FILES=${2:-20000}
MB=${3:-500}
. "$(dirname "$0")/common.sh"
need docker-registry docker-registry

make_context "$work/context" "$FILES" "$MB"
printf 'FROM busybox\nCOPY . /app\n' > "$work/Copy.Dockerfile"
printf 'FROM localhost/busybox:latest\nCOPY . /app\n' > "$work/Buildah.Dockerfile"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
echo $! > "$work/registry.pid"
trap 'kill "$(cat "$work/registry.pid")" 2>/dev/null; if [ -f "$work/dockerd.pid" ]; then kill "$(cat "$work/dockerd.pid")"; sleep 2; fi; rm -rf "$work"' EXIT
i=0; until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null || [ $i -gt 100 ]; do sleep 0.1; i=$((i+1)); done

: > "$work/rbuild.times"; : > "$work/buildah.times"
r=0
while [ $r -lt "$ROUNDS" ]; do
  rm -rf "$work/root"
  t0=$(now)
  "$RBUILD" build --root "$work/root" -f "$work/Copy.Dockerfile" -t "127.0.0.1:$port/rbuild-copy:r$r" --push "$work/context" >"$work/last.log" 2>&1 \
    || { tail -20 "$work/last.log" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/rbuild.times"

  store="$work/buildah-$r"
  B=$(buildah_store "$store")
  t0=$(now)
  $B build -q --layers --pull=never --isolation chroot -f "$work/Buildah.Dockerfile" -t copy "$work/context" >"$work/last.log" 2>&1 \
    || { tail -20 "$work/last.log" >&2; exit 1; }
  $B push -q --tls-verify=false copy "docker://127.0.0.1:$port/buildah-copy:r$r" >>"$work/last.log" 2>&1 \
    || { tail -20 "$work/last.log" >&2; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/buildah.times"
  $B rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$store"
  echo "round $r: rbuild $(tail -1 "$work/rbuild.times") s, buildah $(tail -1 "$work/buildah.times") s" >&2
  r=$((r+1))
done
rb=$(median < "$work/rbuild.times")
bb=$(median < "$work/buildah.times")
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
results="$here/bench/results/$stamp-copy_context.txt"
{
  echo "# bench/copy_context.sh on $(hostname), $(nproc) cores, $stamp; tree $(git -C "$here" rev-parse --short HEAD); ROUNDS=$ROUNDS FILES=$FILES MB=$MB"
  echo "# buildah: overlay storage, chroot isolation, buildah push; rbuild: build --push; a local docker-registry"
  while read -r t; do echo "time rbuild $t"; done < "$work/rbuild.times"
  while read -r t; do echo "time buildah $t"; done < "$work/buildah.times"
  echo "COPY . /app of $FILES files, $MB MB, built and pushed, median of $ROUNDS rounds:"
  printf '  rbuild %.3f s   buildah %.3f s   rbuild / buildah = %.3f\n' "$rb" "$bb" "$(echo "$rb / $bb" | bc -l)"
} | tee "$results"
echo "raw rounds: $results"
