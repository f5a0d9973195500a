#!/bin/bash
# What a RUN step costs in each rbuild tier, on busybox and on a Debian
# base, side by side with BuildKit in the same run (issue 16). Per round
# and per tier, each build on fresh storage of its own with the base already there (untimed):
# a build of one `RUN echo` and a build of eleven, each step's text new
# to the cache; the step's cost is (T11 − T1) / 10, which leaves out what
# every build pays once (probe, plan, base, export). BuildKit is Debian's
# docker.io in a private dockerd (`docker build --no-cache --network
# host`), with the same bases (`docker load`, `docker import`).
#
# Tiers (TIERS="default none nopidns copy chroot"), as in run_chain.sh:
#   default  what auto picks (here full, remapped ids, overlay, slirp4netns)
#   none     --network none     nopidns  --isolation nopidns
#   copy     RBUILD_SNAPSHOTS=copy      chroot   --isolation chroot
#
#   bench/run_tiers.sh [ROUNDS]     (default 3; root; BASES="busybox debian")
# Raw runs: bench/results/<UTC>-run_tiers.txt.
ROUNDS=${1:-3}
BENCH_NO_BUILDAH=1
. "$(dirname "$0")/common.sh"
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
TIERS=${TIERS:-default none nopidns copy chroot}
BASES=${BASES:-busybox debian}
start_buildkit
[ -n "$BUILDKIT" ] || { echo "BuildKit (Debian's docker.io) did not start" >&2; exit 2; }

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
raw="$here/bench/results/$stamp-run_tiers.txt"
mkdir -p "$here/bench/results" "$work/logs"
echo "# tree $(git -C "$here" rev-parse --short HEAD); ROUNDS=$ROUNDS; TIERS=$TIERS; BASES=$BASES" > "$raw"

case " $BASES " in *" debian "*) debian_bench_base ;; esac

# dockerfile BASE STEPS TAG: FROM BASE and STEPS `RUN echo TAG-i`.
dockerfile() {
  from=$1; [ "$1" = debian ] && from=debian-bench:1
  echo "FROM $from"
  i=0; while [ $i -lt "$2" ]; do echo "RUN echo $3-$i"; i=$((i+1)); done
}
variant() {
  case "$1" in
    none) echo "--network none" ;;
    nopidns) echo "--isolation nopidns" ;;
    chroot) echo "--isolation chroot" ;;
    *) echo "" ;;
  esac
}
# rbuild_time TIER BASE STEPS TAG: seconds for one build on $work/root-STEPS.
rbuild_time() {
  snapshots=; [ "$1" = copy ] && snapshots=copy
  dockerfile "$2" "$3" "$4" > "$work/t.Dockerfile"
  t0=$(now)
  # shellcheck disable=SC2046
  RBUILD_SNAPSHOTS=$snapshots "$RBUILD" build --progress=json $(variant "$1") -f "$work/t.Dockerfile" \
    --root "$work/root-$3" -t t "$work/ctx" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; exit 1; }
  echo "$(now) - $t0" | bc
}
buildkit_time() {
  dockerfile "$1" "$2" "$3" > "$work/t.Dockerfile"
  t0=$(now)
  DOCKER_BUILDKIT=1 /usr/bin/docker build -q --no-cache --network host -f "$work/t.Dockerfile" \
    -t t "$work/empty" >/dev/null
  echo "$(now) - $t0" | bc
}
mkdir -p "$work/empty"
# BuildKit unpacks a loaded or imported image on its first use: once,
# untimed, as rbuild's bases are made untimed each round.
for base in $BASES; do buildkit_time "$base" 1 warm >/dev/null; done

r=0
while [ "$r" -lt "$ROUNDS" ]; do
  for base in $BASES; do
    for tier in $TIERS; do
      # Each build on a store of its own with the base made in it: the
      # eleven-step build must not find the one-step build's results (an
      # empty RUN's tree lands on the same chain in both).
      for steps in 1 11; do
        rm -rf "$work/root-$steps"
        if [ "$base" = debian ]; then
          snapshots=; [ "$tier" = copy ] && snapshots=copy
          RBUILD_SNAPSHOTS=$snapshots "$RBUILD" build -f "$work/DebianBase.Dockerfile" --root "$work/root-$steps" \
            -t debian-bench:1 "$work/ctx" >"$work/logs/base.log" 2>&1 || { cat "$work/logs/base.log" >&2; exit 1; }
        fi
      done
      # Each measure starts with no dirty pages of the last one's (a
      # copy-tier Debian build leaves gigabytes that the next builder's
      # fsyncs would wait for).
      sync
      one=$(rbuild_time "$tier" "$base" 1 "r$r-one")
      # And between the two: a copy-tier build's first step copies the
      # base tree another build left (170 MB on Debian), whose dirty
      # pages the next build's first copy would otherwise wait for.
      sync
      eleven=$(rbuild_time "$tier" "$base" 11 "r$r-eleven")
      step=$(echo "($eleven - $one) / 10" | bc -l)
      # rbuild's own timing of the eleven-step build's steps 2-11 (its
      # JSON progress): what a step costs once the stage's tree is there,
      # without the per-build costs that the difference above cancels
      # only when they do not vary (the copy tiers' first step copies the
      # base tree: 0.5-3.8 s here, as the disk's writeback allows).
      inner=$(grep -o '"id":\([2-9]\|1[01]\),"seconds":[0-9.]*,"type":"done"' "$work/last.log" \
        | sed 's/.*"seconds":\([0-9.]*\).*/\1/' | median)
      echo "time rbuild-$tier $base $r one=$one eleven=$eleven step=$step inner=$inner" >> "$raw"
      echo "$step" >> "$work/rbuild-$tier-$base.steps"
      echo "$inner" >> "$work/rbuild-$tier-$base.inner"
    done
    sync
    one=$(buildkit_time "$base" 1 "r$r-one")
    sync
    eleven=$(buildkit_time "$base" 11 "r$r-eleven")
    step=$(echo "($eleven - $one) / 10" | bc -l)
    echo "time buildkit $base $r one=$one eleven=$eleven step=$step" >> "$raw"
    echo "$step" >> "$work/buildkit-$base.steps"
  done
  r=$((r+1))
done

{
  echo "one RUN step's cost, (T11 - T1) / 10, median of $ROUNDS rounds:"
  for base in $BASES; do
    kb=$(median < "$work/buildkit-$base.steps")
    printf '  %-8s BuildKit        %6.1f ms\n' "$base" "$(echo "$kb * 1000" | bc -l)"
    for tier in $TIERS; do
      rb=$(median < "$work/rbuild-$tier-$base.steps")
      printf '  %-8s rbuild %-8s %6.1f ms  / BuildKit %.2f\n' "$base" "$tier" \
        "$(echo "$rb * 1000" | bc -l)" "$(echo "$rb / $kb" | bc -l)"
    done
  done
  echo "one RUN step as rbuild times it (steps 2-11 of the eleven, median of each round's median):"
  for base in $BASES; do
    for tier in $TIERS; do
      printf '  %-8s rbuild %-8s %6.1f ms\n' "$base" "$tier" \
        "$(echo "$(median < "$work/rbuild-$tier-$base.inner") * 1000" | bc -l)"
    done
  done
} | tee -a "$raw"
