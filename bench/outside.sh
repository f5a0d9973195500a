# "The outside" for the network benchmarks (sourced, not run): a network
# namespace joined to the host by a veth pair, with Python's http.server
# serving a blob from it, so that no byte leaves this machine.
#   outside_up NS PREFIX MB DIR: namespace NS, host end PREFIX.1/24 on
#     ${NS}h, outside end PREFIX.2 on ${NS}o; DIR/www/blob of MB megabytes
#     served on PREFIX.2:8080; the server's pid in DIR/server.pid. Refuses
#     a PREFIX that is already routed (a leftover run).
#   outside_down NS DIR: stops the server and removes the namespace.
#   need_tools TOOL...: exits 2 naming the first TOOL not on PATH (the
#     outside itself needs ip, python3 and busybox).
need_tools() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$(basename "$0"): $tool is not installed" >&2; exit 2; }
  done
}
outside_up() {
  local ns=$1 prefix=$2 mb=$3 dir=$4
  if [ -n "$(ip route show "$prefix.0/24")" ]; then
    echo "$prefix.0/24 is already routed (a leftover run?)" >&2; return 2
  fi
  ip netns add "$ns"
  ip link add "${ns}h" type veth peer name "${ns}o"
  ip link set "${ns}o" netns "$ns"
  ip addr add "$prefix.1/24" dev "${ns}h"
  ip link set "${ns}h" up
  ip -n "$ns" addr add "$prefix.2/24" dev "${ns}o"
  ip -n "$ns" link set "${ns}o" up
  ip -n "$ns" link set lo up
  mkdir -p "$dir/www"
  head -c "$((mb * 1000000))" /dev/urandom > "$dir/www/blob"
  (cd "$dir/www" && exec ip netns exec "$ns" python3 -m http.server --bind "$prefix.2" 8080) \
    >/dev/null 2>&1 &
  echo $! > "$dir/server.pid"
  for _ in $(seq 100); do
    printf 'HEAD / HTTP/1.0\r\n\r\n' | busybox nc "$prefix.2" 8080 2>/dev/null | grep -q HTTP && return 0
    sleep 0.1
  done
  echo "the server on $prefix.2:8080 did not answer" >&2; return 2
}
outside_down() {
  [ -f "$2/server.pid" ] && kill "$(cat "$2/server.pid")" 2>/dev/null || true
  ip netns del "$1" 2>/dev/null || true
}
