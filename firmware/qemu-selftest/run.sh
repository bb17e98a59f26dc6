#!/usr/bin/env bash
# Builds the firmware core's self-test for a Cortex-M3 and runs it under QEMU
# (lm3s6965evb), semihosting for output and exit code.
#
#   firmware/qemu-selftest/run.sh                    # must pass (exit 0)
#   firmware/qemu-selftest/run.sh --expect-failure   # builds with APR_SELFTEST_FAIL=1
#                                                    # and must fail (exit 1)
#
# Needs qemu-system-arm (Debian: apt-get install -y qemu-system-arm) and the
# thumbv7m-none-eabi target (added here with rustup). Exits non-zero when the
# result is not the expected one, or QEMU hangs past the timeout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
expect_failure=0
case "${1:-}" in
  "") ;;
  --expect-failure) expect_failure=1 ;;
  *) echo "usage: $0 [--expect-failure]" >&2; exit 2 ;;
esac

if ! command -v qemu-system-arm >/dev/null; then
  echo "qemu-system-arm not found (apt-get install -y qemu-system-arm)" >&2
  exit 2
fi
rustup target add thumbv7m-none-eabi >/dev/null 2>&1 || true

export CARGO_TARGET_DIR="$root/target"
cd "$here"
if [ "$expect_failure" = 1 ]; then
  export APR_SELFTEST_FAIL=1
else
  unset APR_SELFTEST_FAIL
fi
cargo build --release --locked --target thumbv7m-none-eabi

elf="$CARGO_TARGET_DIR/thumbv7m-none-eabi/release/apr-qemu-selftest"
set +e
timeout 60 qemu-system-arm -cpu cortex-m3 -machine lm3s6965evb -nographic \
  -semihosting-config enable=on,target=native -kernel "$elf"
status=$?
set -e

if [ "$status" = 124 ]; then
  echo "qemu-selftest: timed out" >&2
  exit 1
fi
if [ "$expect_failure" = 1 ]; then
  if [ "$status" = 1 ]; then
    echo "qemu-selftest: the deliberately failing build failed, as it must"
    exit 0
  fi
  echo "qemu-selftest: the deliberately failing build exited $status, expected 1" >&2
  exit 1
fi
if [ "$status" != 0 ]; then
  echo "qemu-selftest: failed (exit $status)" >&2
  exit 1
fi
echo "qemu-selftest: passed"
