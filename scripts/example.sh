#!/usr/bin/env bash
# Builds rbuild and runs it on the example in examples/hello. For now rbuild
# parses and validates the Dockerfile (image building lands with the build
# issue); it needs no network and no Docker Hub.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install a Rust toolchain (>= 1.85) with rustup first" >&2
    exit 3
fi
cargo build --release --quiet
./target/release/rbuild debug check examples/hello/Dockerfile
./target/release/rbuild debug dump-ast examples/hello/Dockerfile
