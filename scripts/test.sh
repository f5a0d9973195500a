#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with a Rust toolchain:
# installs the apt packages the tests need when they are missing, then runs
# rustfmt, clippy (warnings are errors) and every test.
#
# Environment:
#   RBUILD_REQUIRE_CONFORMANCE=1  fail (instead of skip) when
#                                 ../shared/conformance/buildkit is missing
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: busybox-static is the base image's binary;
# docker-registry is the real registry the tests start (apache2-utils makes
# its htpasswd file); skopeo and umoci independently read what rbuild writes;
# podman (with runc: crun refuses cgroup v1 hybrid hosts) loads and runs it;
# debootstrap makes the Debian minbase base image the tests build on.
# libseccomp-dev links the seccomp filter every RUN step gets; gcc and
# libc6-dev build the static escape probe; golang-github-docker-docker-dev
# carries Debian's copy of docker's seccomp profile, the confinement
# tests' oracle beside runc; docker.io is the differential harness's
# BuildKit (dockerd 20.10, started privately by the test); slirp4netns is
# RUN's default network and iproute2 makes tests/network.rs's network;
# uidmap's newuidmap and newgidmap map a rootless user's subordinate ids;
# qemu-system-x86 and cpio boot the cgroup v2 guest (tests/cgroup_v2.rs).
APT_PACKAGES=(busybox-static docker-registry apache2-utils openssl skopeo umoci podman runc debootstrap
    libseccomp-dev gcc libc6-dev golang-github-docker-docker-dev docker.io git openssh-client
    slirp4netns iproute2 uidmap qemu-system-x86 cpio)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "==> installing apt packages: ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install a Rust toolchain (>= 1.85) with rustup first" >&2
    exit 3
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "==> adding rustup component $component"
        rustup component add "$component"
    fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "==> cargo doc (broken doc links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
echo "==> cargo test (unit and integration tests; passing tests show their counts)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --lib --bins --tests -- --show-output 2>&1 | tee "$log"
# Every skip prints "*** skipping: <why> ***" (tests/common::skip, the
# conformance tests): how many there were and why, so a green run that
# skipped is visible (.ci/run makes each of them a failure instead).
skipped=$(grep -c '\*\*\* skipping: ' "$log" || true)
echo "==> tests skipped: $skipped"
grep -o '\*\*\* skipping: .* \*\*\*' "$log" | sort | uniq -c || true
cargo test --doc --quiet
echo "==> benchmarks, once each in test mode"
cargo test --bench parser --bench registry --bench sandbox --bench small_files --bench copy_differ
