#!/usr/bin/env bash
# The README's test command: installs test dependencies, then runs every
# crate's tests and the end-to-end tests in tests/ against real parts
# (embedded broker, mosquitto, the server's SQLite store) in one release build,
# the same build `cargo run --release -- demo` uses.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo test --release --workspace "$@"
