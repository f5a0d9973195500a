#!/bin/sh
# A 30-step `RUN true` chain on busybox, cold, side by side in one run:
# rbuild (`rbuild build`: probe, base, 30 sandboxed steps, layers) in each
# of its tiers this machine has (TIERS, below), against `buildah build
# --layers` (overlay storage, chroot isolation: what works on this VM), each on
# fresh storage every round, and against BuildKit (Debian's docker.io,
# installed when missing; a private dockerd started here with --bridge=none
# --iptables=false --ip-forward=false; `docker build --no-cache --network host` with the
# Debian client, whose BuildKit needs no buildx). Prints the median of
# each and the ratios; raw times go to bench/results/<UTC>-run_chain.txt.
#
# The rbuild variants (TIERS="default none remap-off nopidns copy chroot"):
#   default   the tier auto picks (here: full, remapped ids, overlay) and
#             the default network (slirp4netns per step)
#   none      the same with --network=none (what the stack costs)
#   remap-off --userns-remap=off (host root's ids)
#   nopidns   --isolation=nopidns
#   copy      RBUILD_SNAPSHOTS=copy (copied snapshots)
#   chroot    --isolation=chroot
#
#   bench/run_chain.sh [ROUNDS]      (default 5; needs root)
ROUNDS=${1:-5}
. "$(dirname "$0")/common.sh"

{ echo "FROM busybox"; i=0; while [ $i -lt 30 ]; do echo "RUN true"; i=$((i+1)); done; } > "$work/Dockerfile"
sed 's|^FROM busybox|FROM localhost/busybox:latest|' "$work/Dockerfile" > "$work/Buildah.Dockerfile"
start_buildkit

TIERS=${TIERS:-default none remap-off nopidns copy chroot}
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
raw="$here/bench/results/$stamp-run_chain.txt"
mkdir -p "$here/bench/results"
echo "# tree $(git -C "$here" rev-parse --short HEAD); ROUNDS=$ROUNDS; TIERS=$TIERS" > "$raw"
: > "$work/buildah.times"; : > "$work/buildkit.times"
for tier in $TIERS; do : > "$work/rbuild-$tier.times"; done
# rbuild's command line for a variant.
variant() {
  case "$1" in
    default) echo "" ;;
    none) echo "--network none" ;;
    remap-off) echo "--userns-remap=off" ;;
    nopidns) echo "--isolation nopidns" ;;
    copy) echo "" ;;
    chroot) echo "--isolation chroot" ;;
  esac
}
r=0
while [ $r -lt "$ROUNDS" ]; do
  for tier in $TIERS; do
    rm -rf "$work/root" "$work/out"
    snapshots=; [ "$tier" = copy ] && snapshots=copy
    t0=$(now)
    # shellcheck disable=SC2046
    RBUILD_SNAPSHOTS=$snapshots "$RBUILD" build $(variant "$tier") -f "$work/Dockerfile" \
      --root "$work/root" -t chain "$work/ctx" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc >> "$work/rbuild-$tier.times"
    echo "time rbuild-$tier $r $(tail -1 "$work/rbuild-$tier.times")" >> "$raw"
  done

  store="$work/buildah-$r"
  B=$(buildah_store "$store")
  t0=$(now)
  $B build -q --layers --pull=never --isolation chroot -f "$work/Buildah.Dockerfile" -t chain "$work" >/dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc >> "$work/buildah.times"
  echo "time buildah $r $(tail -1 "$work/buildah.times")" >> "$raw"
  $B rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$store"

  if [ -n "$BUILDKIT" ]; then
    t0=$(now)
    DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache --network host -t chain "$work" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc >> "$work/buildkit.times"
    echo "time buildkit $r $(tail -1 "$work/buildkit.times")" >> "$raw"
  fi
  r=$((r+1))
done

bb=$(median < "$work/buildah.times")
kb=
[ -n "$BUILDKIT" ] && kb=$(median < "$work/buildkit.times")
{
  echo "30 x RUN true, cold, median of $ROUNDS rounds:"
  for tier in $TIERS; do
    rb=$(median < "$work/rbuild-$tier.times")
    line=$(printf '  rbuild %-9s %.3f s  / buildah %.2f' "$tier" "$rb" "$(echo "$rb / $bb" | bc -l)")
    [ -n "$kb" ] && line="$line$(printf '  / BuildKit %.2f' "$(echo "$rb / $kb" | bc -l)")"
    echo "$line"
  done
  printf '  buildah          %.3f s\n' "$bb"
  [ -n "$kb" ] && printf '  BuildKit         %.3f s\n' "$kb"
} | tee -a "$raw"
