# Shared set-up for the benchmark scripts (sourced, not run):
#   - builds rbuild (release) into $RBUILD
#   - makes $work (removed on exit, with any dockerd started here)
#   - $work/base: the busybox base rbuild makes, as an OCI layout, for peers
#   - buildah_store DIR: a buildah storage (overlay driver) with that base
#     as localhost/busybox
#   - start_buildkit: a private dockerd with BuildKit (Debian's docker.io,
#     installed when missing); exit 2 when it cannot start
#   - make_context DIR FILES MEGABYTES: copy_context.sh's generated context
#   - debian_tarball LOG: a debootstrap --variant=minbase bookworm root as a tarball
#   - debian_bench_base: that tarball as rbuild's and BuildKit's debian-bench:1
#   - now, median
# BENCH_NO_BUILDAH=1 before sourcing: for scripts that do not use buildah.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release --quiet
RBUILD="$here/target/release/rbuild"
# need CMD PACKAGE: installs Debian's PACKAGE when CMD is missing; a peer
# that cannot be installed stops the benchmark (exit 2), never drops out.
need() {
  command -v "$1" >/dev/null && return
  echo "bench: $1 is missing: apt-get install -y $2" >&2
  apt-get install -y -qq "$2" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$2" >&2; } \
    || { echo "bench: cannot install $2, a peer this benchmark compares against" >&2; exit 2; }
}
[ -n "${BENCH_NO_BUILDAH:-}" ] || need buildah buildah
# Lower-case: skopeo's and buildah's oci: transport name images after the path.
work=/tmp/rbuild-bench-$$; rm -rf "$work"; mkdir -p "$work"
trap 'if [ -f "$work/dockerd.pid" ]; then kill "$(cat "$work/dockerd.pid")"; sleep 2; fi; rm -rf "$work"' EXIT

mkdir -p "$work/ctx"
printf 'FROM busybox\n' > "$work/Base.Dockerfile"
"$RBUILD" build -f "$work/Base.Dockerfile" --root "$work/base-root" -o "type=oci,dest=$work/base,tar=false" -t busybox:latest "$work/ctx" >/dev/null 2>&1

# buildah_store DIR: prints the buildah command line for a storage in DIR
# that holds the base as localhost/busybox:latest.
buildah_store() {
  # overlay, as a buildah user's storage is (vfs copies every layer).
  B="buildah --root $1/root --runroot $1/run --storage-driver overlay"
  $B pull -q "oci:$work/base:latest" >/dev/null
  $B tag "$($B images -q | head -1)" localhost/busybox:latest
  echo "$B"
}

BUILDKIT=
start_buildkit() {
  need dockerd docker.io
  [ -x /usr/bin/docker ] || { echo "bench: Debian's /usr/bin/docker client is missing (docker.io)" >&2; exit 2; }
  export DOCKER_HOST="unix://$work/docker.sock"
  # Its own roots and socket; no bridge, iptables or ip_forward: nothing of
  # the host's settings changes.
  dockerd --bridge=none --iptables=false --ip-forward=false --data-root "$work/docker" \
    --exec-root "$work/docker-exec" -H "$DOCKER_HOST" -p "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  i=0; until /usr/bin/docker info >/dev/null 2>&1 || [ $i -gt 100 ]; do sleep 0.2; i=$((i+1)); done
  skopeo copy -q "oci:$work/base:latest" "docker-archive:$work/base.tar:busybox:latest" >/dev/null
  /usr/bin/docker load -q -i "$work/base.tar" >/dev/null && BUILDKIT=1
  [ -n "$BUILDKIT" ] || { echo "bench: BuildKit (a private dockerd) did not start: $work/dockerd.log" >&2; tail -5 "$work/dockerd.log" >&2; exit 2; }
}

# make_context DIR FILES MEGABYTES: FILES files of random bytes, MEGABYTES
# in all, in 100 dirs (copy_context.sh's generator: the same seed, the
# same bytes).
make_context() {
  mkdir -p "$1"
  python3 - "$1" "$2" "$3" <<'PY'
import os, random, sys
root, files, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
average = mb * 1_000_000 // files
rng = random.Random(6)
pool = rng.randbytes(average * 3)
for i in range(files):
    d = os.path.join(root, "d%02d" % (i % 100))
    os.makedirs(d, exist_ok=True)
    size = average // 2 + rng.randrange(average)
    at = rng.randrange(average)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        f.write(pool[at:at + size])
PY
}

# debian_tarball LOG: prints the path of a debootstrap --variant=minbase
# bookworm root as a tar, made once (debootstrap's output in LOG) and
# cached under /var/cache/rbuild-bench; fails when debootstrap does.
apt_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^[[:space:]]*#' | grep -o 'https\?://[^[:space:]]*' | grep -E '/debian/?$' | head -1
}
debian_tarball() {
  cache=/var/cache/rbuild-bench
  tarball=$cache/debian-bookworm-minbase.tar
  mkdir -p "$cache"
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >"$1" 2>&1 || return 1
    mirror=${RBUILD_DEBIAN_MIRROR:-$(apt_mirror)}
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "debootstrap --variant=minbase bookworm from $mirror (cached in $tarball)" >&2
    debootstrap --variant=minbase bookworm "$work/debian-rootfs" "$mirror" >"$1" 2>&1 || return 1
    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
      --exclude='./var/cache/apt/archives/*.deb' -C "$work/debian-rootfs" -cf "$tarball.tmp" . \
      && mv "$tarball.tmp" "$tarball" || return 1
    rm -rf "$work/debian-rootfs"
  fi
  echo "$tarball"
}

# debian_bench_base: the Debian tarball in $work/ctx/debian.tar, the Dockerfile
# that makes rbuild's base of it ($work/DebianBase.Dockerfile, to build
# as debian-bench:1), and the same image imported into BuildKit's dockerd
# (start_buildkit first); exits when debootstrap fails.
debian_bench_base() {
  tarball=$(debian_tarball "$work/logs/debootstrap.log") \
    || { echo "debootstrap failed: $(tail -5 "$work/logs/debootstrap.log")" >&2; exit 2; }
  cp "$tarball" "$work/ctx/debian.tar"
  printf 'FROM scratch\nADD debian.tar /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' \
    > "$work/DebianBase.Dockerfile"
  /usr/bin/docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" debian-bench:1 >/dev/null
}

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
