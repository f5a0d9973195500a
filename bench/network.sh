#!/usr/bin/env bash
# RUN's network (issue 20): a 100 MB download inside a RUN step through the
# default network (a namespace of the step's own, slirp4netns) against the
# same download with --allow network.host --network=host, side by side in
# one run, ROUNDS rounds each, alternating. The server is Python's
# http.server in a network namespace the script makes (a veth pair standing
# for "the outside", 10.215.0.0/24), so nothing leaves this machine. The
# step times the download itself (/proc/uptime before and after
# `nc ... > /dev/null`), so sandbox start-up is not counted; the table gives
# medians in seconds and MB/s, and the ratio default / host.
#
#   bench/network.sh [ROUNDS] [MB=100]      (needs root, iproute2, slirp4netns)
# Raw runs go to bench/results/<UTC time>-network.txt.
set -eu
ROUNDS=${1:-5}
MB=${MB:-100}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release --quiet
RBUILD="$here/target/release/rbuild"
. "$here/bench/outside.sh"
need_tools ip slirp4netns python3 busybox
work=$(mktemp -d /tmp/rbuild-netbench.XXXXXX)
ns=rbnb$$
cleanup() {
  outside_down "$ns" "$work"
  rm -rf "$work"
}
trap cleanup EXIT
outside_up "$ns" 10.215.0 "$MB" "$work"
mkdir -p "$work/ctx"
cat > "$work/ctx/Dockerfile" <<'EOF'
FROM busybox
ARG ROUND
RUN echo round $ROUND; t0=$(cut -d' ' -f1 /proc/uptime); printf 'GET /blob HTTP/1.0\r\n\r\n' | nc 10.215.0.2 8080 > /tmp/got; t1=$(cut -d' ' -f1 /proc/uptime); echo "bytes $(wc -c < /tmp/got) seconds $t0 $t1"; rm /tmp/got
EOF
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
raw="$here/bench/results/$stamp-network.txt"
mkdir -p "$here/bench/results"
{
  echo "# $("$RBUILD" version 2>/dev/null | head -1), tree $(git rev-parse --short HEAD)"
  echo "# $(slirp4netns --version | head -1); ROUNDS=$ROUNDS MB=$MB"
} > "$raw"
for r in $(seq "$ROUNDS"); do
  for mode in default host; do
    flags=()
    [ "$mode" = host ] && flags=(--allow network.host --network host)
    out=$("$RBUILD" build --root "$work/root" --no-cache --progress=plain \
      --build-arg "ROUND=$r" "${flags[@]}" "$work/ctx" 2>&1) || { echo "$out" >&2; exit 1; }
    line=$(echo "$out" | grep -o "bytes [0-9]* seconds [0-9.]* [0-9.]*" | tail -1)
    [ -n "$line" ] || { echo "$out" >&2; exit 1; }
    set -- $line
    [ "$2" -ge "$((MB * 1000000))" ] || { echo "network.sh: $mode got $2 bytes" >&2; exit 1; }
    secs=$(awk "BEGIN {printf \"%.3f\", $5 - $4}")
    echo "time $mode $r $secs" >> "$raw"
    echo "  $mode round $r: $secs s" >&2
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
d=$(awk '$1 == "time" && $2 == "default" {print $4}' "$raw" | median)
h=$(awk '$1 == "time" && $2 == "host" {print $4}' "$raw" | median)
{
  echo "== ${MB} MB download in a RUN, median of $ROUNDS rounds"
  printf '   %-28s %8s s %8s MB/s\n' "default (slirp4netns)" "$d" "$(awk "BEGIN {printf \"%.0f\", $MB / $d}")"
  printf '   %-28s %8s s %8s MB/s\n' "host (--network=host)" "$h" "$(awk "BEGIN {printf \"%.0f\", $MB / $h}")"
  printf '   ratio default / host: %s\n' "$(awk "BEGIN {printf \"%.2f\", $d / $h}")"
} | tee -a "$raw"
