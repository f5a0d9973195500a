#!/usr/bin/env bash
# Builds rbuild, then the example image in examples/hello (on a busybox base
# rbuild makes from Debian's busybox-static: no network, no Docker Hub), and
# writes it as an OCI layout. With podman installed, it also runs it.
#
#   scripts/example.sh            storage under target/example/root
#   RBUILD_ROOT=DIR scripts/example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install a Rust toolchain (>= 1.85) with rustup first" >&2
    exit 3
fi
# busybox-static is the offline base image; libseccomp-dev is what the
# seccomp filter of every RUN step is compiled with (linked at build time).
missing=()
[ -x /bin/busybox ] || missing+=(busybox-static)
dpkg-query -W -f='${Status}' libseccomp-dev 2>/dev/null | grep -q "ok installed" || missing+=(libseccomp-dev)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi
cargo build --release --quiet
export RBUILD_ROOT=${RBUILD_ROOT:-$PWD/target/example/root}
out=target/example/hello-oci
rm -rf "$out"
./target/release/rbuild -t hello:1.0 -o "type=oci,dest=$out,tar=false" examples/hello
echo "image written to $out (OCI layout, tag 1.0)"
if command -v podman >/dev/null && [ "$(id -u)" -eq 0 ]; then
    # The same flags the tests use on this kind of VM (runc, no network).
    podman --runtime runc run --rm --quiet --network none \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        "oci:$out:1.0"
fi
