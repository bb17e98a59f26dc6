#!/usr/bin/env bash
# Builds the board firmware (STM32F411CE + W5500) in release for
# thumbv7em-none-eabihf and prints its flash and RAM use against the budget,
# failing when over it. Nothing is run: there is no board in CI.
#
#   firmware/board/build.sh
#
# Provisioning variables (APR_ID, APR_DEVICE, APR_MQTT_BROKER, ...) are read
# at compile time; see firmware/board/src/provision.rs.
#
# Budget (README, "Flash and RAM"):
# - flash: vector table + .text + .rodata + .data (its load image) within 75 %
#   of the 128 KiB program partition (sectors 0-4; sectors 5-7 are the
#   outbox), i.e. 96 KiB;
# - RAM: .data + .bss + .uninit + a 32 KiB stack reserve within 50 % of the
#   128 KiB SRAM, i.e. 64 KiB; and no single stack frame above half the
#   reserve.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target=thumbv7em-none-eabihf

FLASH_PARTITION=$((128 * 1024))
FLASH_BUDGET=$((FLASH_PARTITION * 75 / 100))
RAM_TOTAL=$((128 * 1024))
RAM_BUDGET=$((RAM_TOTAL * 50 / 100))
STACK_RESERVE=$((32 * 1024))

rustup target add "$target" >/dev/null 2>&1 || true
rustup component add llvm-tools >/dev/null 2>&1 || true
tools="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
size="$tools/llvm-size"
objdump="$tools/llvm-objdump"
for t in "$size" "$objdump"; do
  if [ ! -x "$t" ]; then
    echo "board: $t not found (rustup component add llvm-tools)" >&2
    exit 2
  fi
done

export CARGO_TARGET_DIR="$root/target"
cd "$here"
cargo build --release --locked --target "$target"
elf="$CARGO_TARGET_DIR/$target/release/apr-board"

# Section sizes (Berkeley-style sums are too coarse: name the sections).
section() { "$size" -A "$elf" | awk -v s="$1" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'; }
vt=$(section .vector_table)
text=$(section .text)
rodata=$(section .rodata)
data=$(section .data)
bss=$(section .bss)
uninit=$(section .uninit)

flash=$((vt + text + rodata + data))
ram_static=$((data + bss + uninit))
ram=$((ram_static + STACK_RESERVE))

# The largest stack frame (`sub sp, #n` in any function), a check that the
# reserve is not absurd; not a whole call-graph bound.
frame=$("$objdump" -d --no-show-raw-insn --triple="$target" "$elf" |
  sed -n 's/.*[[:space:]]sub\(\.w\)\{0,1\}[[:space:]]\{1,\}sp, \(sp, \)\{0,1\}#\(0x[0-9a-fA-F]\{1,\}\|[0-9]\{1,\}\).*/\3/p' |
  while read -r n; do echo $((n)); done | sort -n | tail -1)
frame=${frame:-0}

kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f %%", 100 * a / b }'; }

echo "board: $elf"
echo "board: flash $flash B ($(kib "$flash")): vector table $vt + text $text + rodata $rodata + data $data"
echo "board:   $(pct "$flash" "$FLASH_PARTITION") of the $(kib "$FLASH_PARTITION") program partition, $(pct "$flash" $((512 * 1024))) of the chip's 512 KiB; budget $(kib "$FLASH_BUDGET")"
echo "board: RAM $ram B ($(kib "$ram")): data $data + bss $bss + uninit $uninit + stack reserve $STACK_RESERVE"
echo "board:   $(pct "$ram" "$RAM_TOTAL") of $(kib "$RAM_TOTAL"); budget $(kib "$RAM_BUDGET"); largest stack frame $frame B"

status=0
if [ "$flash" -gt "$FLASH_BUDGET" ]; then
  echo "board: flash over budget ($flash > $FLASH_BUDGET)" >&2
  status=1
fi
if [ "$ram" -gt "$RAM_BUDGET" ]; then
  echo "board: RAM over budget ($ram > $RAM_BUDGET)" >&2
  status=1
fi
if [ "$frame" -gt $((STACK_RESERVE / 2)) ]; then
  echo "board: a stack frame of $frame B is more than half the $STACK_RESERVE B reserve" >&2
  status=1
fi
if [ "$status" = 0 ]; then
  echo "board: within budget"
fi
exit "$status"
