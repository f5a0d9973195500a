#!/usr/bin/env bash
# Which user-mode stack RUN's default network uses (issue 20): Debian's
# slirp4netns against Debian's pasta (passt), side by side in one run, on
# what a RUN step pays for. ROUNDS rounds each, alternating:
#   start   time from a fresh network namespace to its link being ready
#           (every RUN step pays this once);
#   get     a 100 MB HTTP download from "the outside" (a veth pair into a
#           namespace the script makes, 10.216.0.0/24, Python's
#           http.server), read with busybox nc inside the namespace;
#   dns     one lookup through the stack's DNS forwarder answered (yes/no);
#   host-lo whether the host's 127.0.0.1 is reachable through the stack's
#           gateway address with the options rbuild would pass (must be no).
# Nothing leaves this machine. Both stacks serve a namespace owned by
# nobody, as in a rootless build: Debian's pasta (passt 0.0~git20230309)
# will not serve a root-owned one (as root it switches to nobody, then
# "Couldn't open user namespace /proc/N/ns/user"), so no root tier could
# use it. A download that stops moving for STALL seconds is recorded as
# stalled, not waited for. The table gives medians over the rounds that
# finished and the ratio pasta / slirp4netns.
#
#   bench/netstack.sh [ROUNDS=5] [MB=100]   (needs root, iproute2,
#                                            slirp4netns, passt, python3,
#                                            busybox-static)
# Raw runs go to bench/results/<UTC time>-netstack.txt.
set -eu
# In a private mount namespace of its own (a tun node bound over
# /dev/net/tun lives and dies there; the host's device stays as it is).
if [ -z "${NETSTACK_INNER:-}" ]; then
  exec env NETSTACK_INNER=1 unshare --mount --propagation private bash "$0" "$@"
fi
ROUNDS=${1:-5}
MB=${MB:-100}
STALL=${STALL:-30}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/outside.sh"
need_tools ip slirp4netns pasta python3 busybox unshare nsenter
work=$(mktemp -d /tmp/rbuild-netstack.XXXXXX)
ns=rbns$$
cleanup() {
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  outside_down "$ns" "$work"
  umount /dev/net/tun "$work/dev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
outside_up "$ns" 10.216.0 "$MB" "$work"
# Both stacks run as they would for a rootless build, as nobody in a user
# namespace nobody owns: Debian's pasta will not serve a root-owned
# namespace (as root it switches to nobody, then cannot open it), and this
# VM's /dev/net/tun is root's only. So the namespace sees a tun node open
# to everyone, made in a tmpfs of this mount namespace.
chmod 755 "$work"
mkdir -p "$work/dev"
mount -t tmpfs -o mode=755 tmpfs "$work/dev"
mknod -m 666 "$work/dev/tun" c 10 200
mount --bind "$work/dev/tun" /dev/net/tun
nobody=(setpriv --reuid 65534 --regid 65534 --clear-groups)
# A listener on the host's loopback, which no step may reach.
python3 -m http.server --bind 127.0.0.1 18999 --directory "$work/www" >/dev/null 2>&1 &
echo $! > "$work/lo.pid"
for _ in $(seq 100); do
  printf 'HEAD / HTTP/1.0\r\n\r\n' | busybox nc 127.0.0.1 18999 2>/dev/null | grep -q HTTP && break
  sleep 0.1
done

now() { date +%s.%N; }
# Starts STACK on a fresh namespace; sets holder (the pid holding the
# namespace) and start (seconds until the link was ready). Not run in a
# command substitution, whose subshell would run the EXIT trap.
start_stack() {
  local stack=$1
  "${nobody[@]}" unshare --user --map-root-user --net sleep 600 &
  holder=$!
  echo "$holder" > "$work/holder.pid"
  sleep 0.2
  local t0 t1
  t0=$(now)
  case "$stack" in
    slirp4netns)
      rm -f "$work/ready"; mkfifo "$work/ready"
      "${nobody[@]}" slirp4netns --configure --mtu=65520 --disable-host-loopback --ready-fd=3 \
        --userns-path="/proc/$holder/ns/user" "$holder" tap0 3>"$work/ready" >/dev/null 2>&1 &
      echo $! > "$work/stack.pid"
      head -c1 "$work/ready" >/dev/null
      ;;
    pasta)
      # -T/-U none: no forwarding from the namespace's ports to the host's;
      # --no-map-gw: the gateway address is not the host's loopback.
      # --dns-forward: DNS at the address slirp4netns uses, for the same probe.
      # Without a terminal pasta stays in the foreground and has no ready
      # signal: ready is when the namespace has its default route.
      "${nobody[@]}" pasta --config-net -q -f -t none -u none -T none -U none --no-map-gw \
        --dns-forward 10.0.2.3 \
        "$holder" >/dev/null 2>&1 &
      echo $! > "$work/stack.pid"
      until [ -n "$(nsenter -t "$holder" -U -n --preserve-credentials ip route show default)" ]; do
        kill -0 "$(cat "$work/stack.pid")" 2>/dev/null || { echo "netstack.sh: pasta exited" >&2; exit 1; }
        sleep 0.001
      done
      ;;
  esac
  t1=$(now)
  start=$(awk "BEGIN {printf \"%.3f\", $t1 - $t0}")
}
stop_stack() {
  local pids=("$(cat "$work/stack.pid")" "$(cat "$work/holder.pid")")
  kill "${pids[@]}" 2>/dev/null || true
  # Only these two: the servers are background jobs too. pasta's daemon is
  # no child of ours, so wait does not hold for it.
  wait "${pids[@]}" 2>/dev/null || true
}
gateway_of() { # the address the stack answers on for the host
  case "$1" in slirp4netns) echo 10.0.2.2 ;; pasta) nsenter -t "$2" -U -n --preserve-credentials ip route show default | awk '{print $3; exit}' ;; esac
}
dns_of() {
  echo 10.0.2.3
}

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
raw="$here/bench/results/$stamp-netstack.txt"
mkdir -p "$here/bench/results"
{
  echo "# tree $(git -C "$here" rev-parse --short HEAD); $(slirp4netns --version | head -1);"\
    "passt $(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo '?'); ROUNDS=$ROUNDS MB=$MB"
} > "$raw"
for r in $(seq "$ROUNDS"); do
  for stack in slirp4netns pasta; do
    start_stack "$stack"
    t0=$(now)
    # A stall is a result, not a hang: the download gets STALL seconds.
    got=$(printf 'GET /blob HTTP/1.0\r\n\r\n' |
      nsenter -t "$holder" -U -n --preserve-credentials timeout "$STALL" busybox nc 10.216.0.2 8080 | wc -c)
    t1=$(now)
    get=$(awk "BEGIN {printf \"%.3f\", $t1 - $t0}")
    [ "$got" -ge "$((MB * 1000000))" ] || get=stalled
    dns=no
    if nsenter -t "$holder" -U -n --preserve-credentials python3 -c "
import socket,struct,sys
q=struct.pack('>HHHHHH',7,0x100,1,0,0,0)+b'\x09localhost\x00\x00\x01\x00\x01'
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)
s.sendto(q,('$(dns_of "$stack" "$holder")',53));d=s.recv(512)
sys.exit(0 if d[:2]==q[:2] else 1)" 2>/dev/null; then dns=yes; fi
    lo=no
    gw=$(gateway_of "$stack" "$holder")
    if printf 'GET / HTTP/1.0\r\n\r\n' | nsenter -t "$holder" -U -n --preserve-credentials timeout 3 busybox nc "$gw" 18999 2>/dev/null | grep -q HTTP; then
      lo=yes
    fi
    stop_stack
    echo "run $stack $r start $start get $get bytes $got dns $dns host-lo $lo" >> "$raw"
    echo "  $stack round $r: start $start s, get $get s ($got bytes), dns $dns, host-lo $lo" >&2
  done
done
median() { grep -v stalled | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
col() { awk -v s="$1" -v c="$2" '$1 == "run" && $2 == s {for (i = 4; i < NF; i++) if ($i == c) print $(i + 1)}' "$raw"; }
ratio() { awk "BEGIN {if (\"$1\" == \"-\" || \"$2\" == \"-\") print \"-\"; else printf \"%.2f\", $1 / $2}" 2>/dev/null || echo -; }
{
  echo "== user-mode stacks, median of $ROUNDS rounds (${MB} MB download, stalled after ${STALL} s)"
  printf '   %-12s %9s %9s %9s %9s %5s %8s\n' stack "start s" "get s" "MB/s" stalled dns host-lo
  for stack in slirp4netns pasta; do
    s=$(col "$stack" start | median); g=$(col "$stack" get | median)
    printf '   %-12s %9s %9s %9s %9s %5s %8s\n' "$stack" "$s" "$g" \
      "$(ratio "$MB" "$g" | sed 's/\.[0-9]*$//')" "$(col "$stack" get | grep -c stalled)/$ROUNDS" \
      "$(col "$stack" dns | sort -u | tr '\n' ' ')" "$(col "$stack" host-lo | sort -u | tr '\n' ' ')"
  done
  printf '   ratio pasta / slirp4netns: start %s, download %s\n' \
    "$(ratio "$(col pasta start | median)" "$(col slirp4netns start | median)")" \
    "$(ratio "$(col pasta get | median)" "$(col slirp4netns get | median)")"
} | tee -a "$raw"
