#!/usr/bin/env bash
# Snapshots (issue 15): rbuild against BuildKit side by side in one run,
# three cases, each built cold, cached (the same build again, nothing
# changed) and after a one-file change, with `-t` only and with a push to
# a local registry; medians of ROUNDS rounds and the ratios rbuild /
# BuildKit, with the targets beside them (cold <= 0.8, cached and change
# <= 0.5). rbuild's copy tier (RBUILD_SNAPSHOTS=copy) is a third column.
#
#   big-copy            FROM busybox, COPY . /app of a generated context
#                       (FILES files, MB megabytes), RUN du -s /app;
#                       change: one context file's bytes
#   debian-small-files  FROM a debootstrap --variant=minbase bookworm base,
#                       RUN writing 10,000 small files, RUN chown -R
#                       1000:1000 of them, COPY app/ /app/ (3 files);
#                       change: one of the app files
#   chain30             FROM busybox, COPY f /f, 30 distinct RUN steps;
#                       change: f
#   big-context-1g      (RSS_1G=1 only) rbuild's peak RSS for COPY . /app
#                       of a 1 GB context, against the 64 MB target
#
# BuildKit is Debian's docker.io (dockerd 20.10 with its BuildKit; the
# Debian /usr/bin/docker client, DOCKER_BUILDKIT=1, --network host), run
# privately here (own data root, exec root, pidfile and socket;
# --bridge=none --iptables=false --ip-forward=false); installed with apt
# when missing; the script fails (exit 2) when it cannot start. Pushes go
# to Debian's docker-registry on 127.0.0.1 (in dockerd's daemon.json
# insecure-registries); a second such registry serves the Debian base.
#
# Cold means fresh storage that holds only the base image:
#   rbuild:   a new --root, into which the base is pulled (untimed) by a
#             `FROM base` build;
#   BuildKit: `docker rmi` of the case's tags, `docker image prune -f` and
#             `docker builder prune -af` (the base images stay in
#             dockerd's image store). Not --no-cache: that keeps
#             BuildKit's copy of the context and its content hashes.
#   --push:   the push registry is restarted on empty storage too.
# Every rbuild build runs under /usr/bin/time -v; the tables give the
# largest "Maximum resident set size" of each case (rbuild and the
# processes it waited for).
#
#   bench/snapshots.sh [ROUNDS] [NAME=VALUE...]        (needs root)
#     ROUNDS=3  FILES=20000  MB=500  CASES=big-copy,debian-small-files,chain30
#     PUSH=1 (0: -t only)   COPY_TIER=1 (0: no copy-tier column)
#     RSS_1G=0 (1: the big-context-1g check; FILES_1G=20000 files, 1000 MB)
#     FS=host (the work dir on this machine's file system) or FS=ext4 (a
#       journaled ext4 made for the run: a sparse FS_GB=40 GB image on a
#       loop device holding the whole work dir, both builders' storage,
#       the contexts and the registries; unmounted and removed at exit).
#       This VM's root ext4 has no journal, and without one ext4 skips
#       inodes freed in the last minutes when it allocates (ialloc.c,
#       recently_deleted): a build right after a reset that deleted the
#       previous case's store spends most of its time in that scan.
#     RBUILD_DEBIAN_MIRROR (default: this machine's apt source for Debian)
# Raw per-round timings and the tables go to
# bench/results/<UTC time>-snapshots.txt. Exit 1 when any build failed
# (the failures are in the tables and the results file).
set -u
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
for arg in "$@"; do
  case $arg in
    -h | --help) usage; exit 0 ;;
    [A-Z]*=*) export "${arg?}" ;;
    '' | *[!0-9]*) usage >&2; exit 2 ;;
    *) ROUNDS=$arg ;;
  esac
done
ROUNDS=${ROUNDS:-3}
FILES=${FILES:-20000}
MB=${MB:-500}
CASES=${CASES:-big-copy,debian-small-files,chain30}
COPY_TIER=${COPY_TIER:-1}
PUSH=${PUSH:-1}
RSS_1G=${RSS_1G:-0}
FILES_1G=${FILES_1G:-20000}
FS=${FS:-host}
FS_GB=${FS_GB:-40}
case $FS in host | ext4) ;; *) echo "snapshots.sh: FS=$FS: host or ext4" >&2; exit 2 ;; esac
unset RBUILD_SNAPSHOTS
DOCKER=/usr/bin/docker

die() { # CODE MESSAGE
  code=$1; shift
  echo "snapshots.sh: error: $*" >&2
  exit "$code"
}
[ "$(id -u)" -eq 0 ] || die 2 "run as root (dockerd, debootstrap, rbuild's sandbox)"
for c in ${CASES//,/ }; do
  case $c in big-copy | debian-small-files | chain30) ;; *) die 2 "unknown case $c (big-copy, debian-small-files, chain30)" ;; esac
done

# need COMMAND PACKAGE: installs PACKAGE with apt when COMMAND is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "snapshots.sh: $1 is missing: apt-get install -y $2" >&2
  apt-get install -y "$2" >&2 || { apt-get update >&2 && apt-get install -y "$2" >&2; }
  command -v "$1" >/dev/null 2>&1
}
need docker-registry docker-registry || die 2 "cannot install docker-registry"
need /usr/bin/time time || die 2 "cannot install time (GNU time, for the peak RSS)"
need skopeo skopeo || die 2 "cannot install skopeo"
case ",$CASES," in *,debian-small-files,*) need debootstrap debootstrap || die 2 "cannot install debootstrap" ;; esac
if ! { [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ]; }; then
  echo "snapshots.sh: Debian's docker.io is missing: apt-get install -y docker.io" >&2
  apt-get install -y docker.io >&2 || { apt-get update >&2 && apt-get install -y docker.io >&2; } \
    || die 2 "cannot install docker.io: BuildKit, the peer, is required"
fi

BENCH_NO_BUILDAH=1
. "$(dirname "$0")/common.sh"
set +e

# FS=ext4: the work dir moves onto a fresh journaled ext4.
fsimg=
if [ "$FS" = ext4 ]; then
  fsimg=$work.img
  mv "$work" "$work.host" && mkdir "$work" \
    && truncate -s "${FS_GB}G" "$fsimg" && mkfs.ext4 -q -F "$fsimg" \
    && mount -o loop "$fsimg" "$work" && cp -a "$work.host/." "$work/" \
    || { umount "$work" 2>/dev/null; rm -rf "$work.host" "$fsimg"; echo "snapshots.sh: error: cannot make the ext4 work file system" >&2; exit 2; }
  rm -rf "$work.host"
fi

cleanup() {
  set +e
  for name in registry-push registry-base; do
    [ -f "$work/$name.pid" ] && kill "$(cat "$work/$name.pid")" 2>/dev/null
  done
  if [ -f "$work/dockerd.pid" ]; then
    pid=$(cat "$work/dockerd.pid")
    kill "$pid" 2>/dev/null
    i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
    kill -9 "$pid" 2>/dev/null
    # dockerd stops the containerd it started; when it did not:
    c=$(cat "$work/dx/containerd/containerd.pid" 2>/dev/null) && kill "$c" 2>/dev/null
  fi
  wait 2>/dev/null
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  # On FS=ext4 the mount point itself stays until it is unmounted.
  rm -rf "$work" 2>/dev/null
  if [ -n "$fsimg" ]; then
    umount "$work" && rm -rf "$work" "$fsimg"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
results="$here/bench/results/$stamp-snapshots.txt"
raw="$work/raw.txt"
: > "$raw"
mkdir -p "$work/logs" "$work/df" "$work/ctx" "$work/empty"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pport=$(free_port)
bport=$(free_port)
while [ "$bport" = "$pport" ]; do bport=$(free_port); done

# start_registry NAME PORT: a docker-registry on empty storage.
start_registry() {
  rm -rf "$work/$1"
  mkdir -p "$work/$1"
  cat > "$work/$1.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/$1
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
EOF
  docker-registry serve "$work/$1.yml" >>"$work/$1.log" 2>&1 &
  echo $! > "$work/$1.pid"
  i=0
  until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$2/v2/')" 2>/dev/null; do
    [ $i -gt 100 ] && die 2 "docker-registry did not start on 127.0.0.1:$2: $(tail -5 "$work/$1.log")"
    sleep 0.1; i=$((i+1))
  done
}
stop_registry() {
  pid=$(cat "$work/$1.pid")
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -f "$work/$1.pid"
}
start_registry registry-push "$pport"
start_registry registry-base "$bport"

# The private dockerd (BuildKit). Failing to start it fails the run.
export DOCKER_HOST="unix://$work/docker.sock"
printf '{\n  "insecure-registries": ["127.0.0.1:%s", "127.0.0.1:%s"]\n}\n' "$pport" "$bport" > "$work/daemon.json"
/usr/sbin/dockerd --config-file "$work/daemon.json" --bridge=none --iptables=false --ip-forward=false \
  --data-root "$work/docker" --exec-root "$work/dx" --pidfile "$work/dockerd.pidfile" \
  -H "$DOCKER_HOST" >"$work/dockerd.log" 2>&1 &
echo $! > "$work/dockerd.pid"
i=0
until "$DOCKER" version >/dev/null 2>&1; do
  kill -0 "$(cat "$work/dockerd.pid")" 2>/dev/null || die 2 "dockerd exited: $(tail -5 "$work/dockerd.log")"
  [ $i -gt 150 ] && die 2 "dockerd did not answer in 30 s: $(tail -5 "$work/dockerd.log")"
  sleep 0.2; i=$((i+1))
done
skopeo copy -q "oci:$work/base:latest" "docker-archive:$work/base.tar:busybox:latest" >/dev/null \
  && "$DOCKER" load -q -i "$work/base.tar" >/dev/null \
  || die 2 "cannot load the busybox base into dockerd"
printf 'FROM busybox\nRUN true\n' > "$work/df/probe.Dockerfile"
DOCKER_BUILDKIT=1 "$DOCKER" build -q --network host -f "$work/df/probe.Dockerfile" "$work/empty" >"$work/logs/probe.log" 2>&1 \
  || die 2 "BuildKit cannot build here: $(tail -5 "$work/logs/probe.log")"

# The Debian base: a debootstrap tarball cached under /var/cache, imported
# into dockerd and pushed to the base registry, where rbuild pulls it.
DEBIAN=127.0.0.1:$bport/library/debian:bookworm-minbase
debian_base() {
  tarball=$(debian_tarball "$work/logs/debootstrap.log") || die 2 "debootstrap failed: $(tail -5 "$work/logs/debootstrap.log")"
  "$DOCKER" import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' "$tarball" "$DEBIAN" >/dev/null \
    && "$DOCKER" push "$DEBIAN" >"$work/logs/debian-push.log" 2>&1 \
    || die 2 "cannot import the Debian base: $(tail -5 "$work/logs/debian-push.log" 2>/dev/null)"
}

# setup_case CASE: its context, Dockerfile, base and the file a change edits.
declare -A CTX BASE CHANGED
setup_case() {
  ctx=$work/ctx/$1
  df=$work/df/$1.Dockerfile
  case $1 in
    big-copy)
      make_context "$ctx" "$FILES" "$MB" || die 2 "cannot generate the context"
      printf 'FROM busybox\nCOPY . /app\nRUN du -s /app >/dev/null\n' > "$df"
      BASE[$1]=busybox
      CHANGED[$1]=$ctx/d00/f00000.bin
      echo "desc $1 FROM busybox; COPY . /app ($FILES files, $MB MB); RUN du -s /app" >> "$raw"
      ;;
    debian-small-files)
      debian_base
      mkdir -p "$ctx/app"
      for n in main.sh config.txt README; do echo "app file $n" > "$ctx/app/$n"; done
      cat > "$df" <<EOF
FROM $DEBIAN
RUN mkdir /data && cd /data && for i in \$(seq 10000); do echo \$i > f\$i; done
RUN chown -R 1000:1000 /data
COPY app/ /app/
EOF
      BASE[$1]=$DEBIAN
      CHANGED[$1]=$ctx/app/config.txt
      echo "desc $1 FROM debian bookworm minbase; RUN 10,000 small files; RUN chown -R 1000:1000; COPY app/ /app/ (3 files)" >> "$raw"
      ;;
    chain30)
      mkdir -p "$ctx"
      echo first > "$ctx/f"
      { echo "FROM busybox"; echo "COPY f /f"; for n in $(seq 30); do echo "RUN echo $n > /f"; done; } > "$df"
      BASE[$1]=busybox
      CHANGED[$1]=$ctx/f
      echo "desc $1 FROM busybox; COPY f /f; 30 x RUN echo N > /f" >> "$raw"
      ;;
  esac
  CTX[$1]=$ctx
  printf 'FROM %s\n' "${BASE[$1]}" > "$work/df/seed-$1.Dockerfile"
  cp "${CHANGED[$1]}" "$work/$1.orig"
}

# timed CASE BUILDER MODE KIND ROUND COMMAND...: runs COMMAND, appends its
# wall time (or FAIL, with the log's tail) to the raw results.
failed=0
timed() {
  local key="$1 $2 $3 $4 $5" log="$work/logs/${1}_${2}_${3}_${4}_$5.log" t0 t1 rc secs kb
  shift 5
  rm -f "$work/time.out"
  t0=$(now)
  "$@" >"$log" 2>&1
  rc=$?
  t1=$(now)
  if [ $rc -ne 0 ]; then
    echo "time $key FAIL" >> "$raw"
    { echo "fail $key: exit $rc: $*"; tail -15 "$log" | sed 's/^/fail   | /'; } >> "$raw"
    echo "snapshots.sh: FAILED $key (exit $rc); tail of its log:" >&2
    tail -15 "$log" >&2
    failed=1
    return 1
  fi
  secs=$(awk "BEGIN {printf \"%.3f\", $t1 - $t0}")
  echo "time $key $secs" >> "$raw"
  if [ -s "$work/time.out" ]; then
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.out")
    [ -n "$kb" ] && echo "rss $key $kb" >> "$raw"
    rm -f "$work/time.out"
  fi
  echo "  $key $secs s" >&2
}

# rbuild_cmd BUILDER ARGS...: rbuild under GNU time, copy tier or not.
rbuild_cmd() {
  tier=$1; shift
  rm -f "$work/time.out"
  if [ "$tier" = rbuild-copy ]; then
    env RBUILD_SNAPSHOTS=copy /usr/bin/time -v -o "$work/time.out" "$RBUILD" build --root "$work/root" "$@"
  else
    /usr/bin/time -v -o "$work/time.out" "$RBUILD" build --root "$work/root" "$@"
  fi
}
buildkit_cmd() { # MODE TAG DOCKERFILE CONTEXT
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host -f "$3" -t "$2" "$4" || return
  [ "$1" = t ] || "$DOCKER" push "$2"
}

# reset CASE BUILDER MODE: cold storage for BUILDER (and the push registry).
reset() {
  if [ "$3" = push ]; then
    stop_registry registry-push
    start_registry registry-push "$pport"
  fi
  case $2 in
    rbuild*)
      rm -rf "$work/root"
      # The base into the fresh root, as dockerd holds it (untimed).
      rbuild_cmd "$2" -f "$work/df/seed-$1.Dockerfile" -t "bench/seed:$1" "$work/empty" >"$work/logs/seed.log" 2>&1
      ;;
    buildkit)
      "$DOCKER" rmi -f "bench/$1:buildkit" "127.0.0.1:$pport/bench/$1:buildkit" >/dev/null 2>&1
      "$DOCKER" image prune -f >/dev/null 2>&1
      "$DOCKER" builder prune -af >/dev/null 2>&1
      ;;
  esac
}

# sequence CASE BUILDER MODE ROUND: cold, cached, one-file change.
sequence() {
  local c=$1 b=$2 m=$3 r=$4 tag push kind k
  if [ "$m" = t ]; then tag=bench/$c:$b; push=; else tag=127.0.0.1:$pport/bench/$c:$b; push=--push; fi
  if ! reset "$c" "$b" "$m"; then
    echo "time $c $b $m cold $r FAIL" >> "$raw"
    { echo "fail $c $b $m cold $r: resetting (the untimed base pull) failed"; tail -15 "$work/logs/seed.log" | sed 's/^/fail   | /'; } >> "$raw"
    failed=1
    return
  fi
  for kind in cold cached change; do
    [ "$kind" = change ] && printf 'changed by %s %s round %s\n' "$b" "$m" "$r" >> "${CHANGED[$c]}"
    if [ "$b" = buildkit ]; then
      timed "$c" "$b" "$m" "$kind" "$r" buildkit_cmd "$m" "$tag" "$work/df/$c.Dockerfile" "${CTX[$c]}"
    else
      timed "$c" "$b" "$m" "$kind" "$r" rbuild_cmd "$b" -f "$work/df/$c.Dockerfile" -t "$tag" $push "${CTX[$c]}"
    fi || {
      for k in cold cached change; do
        grep -q "^time $c $b $m $k $r " "$raw" || echo "time $c $b $m $k $r SKIP" >> "$raw"
      done
      break
    }
  done
  cp "$work/$c.orig" "${CHANGED[$c]}"
  rm -rf "$work/root"
}

builders="rbuild buildkit"
[ "$COPY_TIER" = 0 ] || builders="$builders rbuild-copy"
modes=t
[ "$PUSH" = 0 ] || modes="t push"
for c in ${CASES//,/ }; do setup_case "$c"; done
r=0
while [ $r -lt "$ROUNDS" ]; do
  echo "snapshots.sh: round $((r+1)) of $ROUNDS" >&2
  for c in ${CASES//,/ }; do
    for m in $modes; do
      for b in $builders; do sequence "$c" "$b" "$m" "$r"; done
    done
  done
  r=$((r+1))
done
for c in ${CASES//,/ }; do rm -rf "${CTX[$c]}"; done

if [ "$RSS_1G" = 1 ]; then
  echo "snapshots.sh: big-context-1g" >&2
  c=big-context-1g
  CTX[$c]=$work/ctx/$c
  make_context "${CTX[$c]}" "$FILES_1G" 1000 || die 2 "cannot generate the 1 GB context"
  printf 'FROM busybox\nCOPY . /app\n' > "$work/df/$c.Dockerfile"
  printf 'FROM busybox\n' > "$work/df/seed-$c.Dockerfile"
  echo "desc $c FROM busybox; COPY . /app ($FILES_1G files, 1000 MB); rbuild only, cold -t" >> "$raw"
  for b in $builders; do
    [ "$b" = buildkit ] && continue
    reset "$c" "$b" t
    timed "$c" "$b" t cold 0 rbuild_cmd "$b" -f "$work/df/$c.Dockerfile" -t "bench/$c:$b" "${CTX[$c]}"
    rm -rf "$work/root"
  done
fi

# The tables.
report() {
  python3 - "$raw" "$ROUNDS" <<'PY'
import statistics, sys
from collections import defaultdict
raw, rounds = sys.argv[1], sys.argv[2]
times, rss, desc, order = defaultdict(list), defaultdict(list), {}, []
for line in open(raw):
    f = line.split()
    if not f:
        continue
    if f[0] == "desc":
        desc[f[1]] = " ".join(f[2:]); order.append(f[1])
    elif f[0] == "time":
        v = f[6]
        times[tuple(f[1:5])].append(float(v) if v not in ("FAIL", "SKIP") else v)
    elif f[0] == "rss":
        rss[(f[1], f[2])].append(int(f[6]))
target = {"cold": 0.8, "cached": 0.5, "change": 0.5}

def med(key):
    vals = times.get(key, [])
    ok = [v for v in vals if isinstance(v, float)]
    bad = len(vals) - len(ok)
    if not ok and bad:
        return None, ("FAIL" if "FAIL" in vals else "skip")
    return (statistics.median(ok) if ok else None), bad

def cell(m, bad):
    if m is None:
        return bad if bad else "-"
    return f"{m:.3f}" + ("*" if bad else "")

def ratio(a, b, kind):
    if a is None or b is None or b == 0:
        return "    -   ", False
    x = a / b
    return f"{x:6.3f} {'ok' if x <= target[kind] else 'MISS'}", True

def mb(kb):
    return f"{kb / 1024:.1f} MB"

starred = False
for case in order:
    print(f"== {case}: {desc[case]}")
    if case == "big-context-1g":
        for b in ("rbuild", "rbuild-copy"):
            if (case, b) in rss or (case, b, "t", "cold") in times:
                m, bad = med((case, b, "t", "cold"))
                peak = max(rss.get((case, b), [0]))
                verdict = ("ok" if peak <= 64 * 1024 else "MISS") if peak else "FAIL"
                print(f"   {b:<12} peak RSS {mb(peak) if peak else 'FAIL':>10} (target <= 64 MB: {verdict}), wall {cell(m, bad)} s")
        print()
        continue
    copy = any(k[0] == case and k[1] == "rbuild-copy" for k in times)
    print(f"   median of {rounds} rounds, seconds; ratio = rbuild / BuildKit (target)")
    head = f"   {'':7}{'':7}{'rbuild':>9} {'BuildKit':>9}  {'ratio':<11} {'target':<7}"
    if copy:
        head += f"{'copy-tier':>10}  {'ratio':<11}"
    print(head.rstrip())
    for mode in ("t", "push"):
        if not any(k[0] == case and k[2] == mode for k in times):
            continue
        for kind in ("cold", "cached", "change"):
            rb, rbad = med((case, "rbuild", mode, kind))
            bk, bbad = med((case, "buildkit", mode, kind))
            starred |= bool(rbad or bbad)
            rt, _ = ratio(rb, bk, kind)
            line = f"   {'-t' if mode == 't' else '--push':<7}{kind:<7}{cell(rb, rbad):>9} {cell(bk, bbad):>9}  {rt:<11} {'<= ' + str(target[kind]):<7}"
            if copy:
                cp, cbad = med((case, "rbuild-copy", mode, kind))
                starred |= bool(cbad)
                ct, _ = ratio(cp, bk, kind)
                line += f"{cell(cp, cbad):>10}  {ct:<11}"
            print(line.rstrip())
    peaks = [f"{b} {mb(max(rss[(case, b)]))}" for b in ("rbuild", "rbuild-copy") if (case, b) in rss]
    print(f"   peak RSS of rbuild (largest over the case's builds): {', '.join(peaks) or 'none measured'}")
    print()
if starred:
    print("* some rounds failed or were skipped (after a failure); the median is of the rest;")
    print("  FAIL: every round failed; skip: not run after a failure in its sequence; see the fail lines")
PY
}

{
  echo "# bench/snapshots.sh on $(uname -n), $(nproc) cores, kernel $(uname -r), $stamp"
  echo "# ROUNDS=$ROUNDS FILES=$FILES MB=$MB CASES=$CASES PUSH=$PUSH COPY_TIER=$COPY_TIER RSS_1G=$RSS_1G FILES_1G=$FILES_1G FS=$FS"
  echo "# $("$RBUILD" version 2>/dev/null | head -1), tree $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
  echo "# BuildKit: dockerd $("$DOCKER" version -f '{{.Server.Version}}' 2>/dev/null) (Debian docker.io), client $("$DOCKER" version -f '{{.Client.Version}}' 2>/dev/null)"
  echo "# cold: rbuild a fresh --root holding the base; BuildKit docker rmi + image prune + builder prune -af; --push: a fresh registry"
  echo
  report
  echo "# raw: time CASE BUILDER MODE KIND ROUND SECONDS | rss CASE BUILDER MODE KIND ROUND KILOBYTES"
  cat "$raw"
} > "$results.tmp"
mv "$results.tmp" "$results"
sed -n '/^== /,/^# raw:/p' "$results" | sed '$d'
echo "raw rounds and tables: $results"
[ "$failed" = 0 ] || exit 1
