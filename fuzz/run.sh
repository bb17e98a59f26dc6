#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each with cargo fuzz
# (libFuzzer) and fails if any crashes. Prints per target: seconds, runs,
# exec/s, coverage (cov = edges, ft = features), corpus size.
#
#   fuzz/run.sh SECONDS_PER_TARGET [TARGET ...]
#
# Toolchain: nightly if installed, else stable with RUSTC_BOOTSTRAP=1 (cargo
# fuzz needs -Z flags); APR_FUZZ_TOOLCHAIN=stable|nightly forces one.
# Builds go to fuzz/target (never the workspace's target dir). New inputs
# found go to fuzz/target/corpus/<target> (the committed seeds in
# fuzz/corpus/<target> are only read); a crashing input is written to
# fuzz/artifacts/<target>/. Each run appends a line to fuzz/target/runs.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: fuzz/run.sh SECONDS_PER_TARGET [TARGET ...]}
shift

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

toolchain=${APR_FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        toolchain=nightly
    else
        toolchain=stable
    fi
fi
if [ "$toolchain" != nightly ]; then
    # cargo fuzz passes -Zsanitizer and -Z flags; stable accepts them so.
    export RUSTC_BOOTSTRAP=1
fi
# Never the shared target dir, whatever the environment says.
unset CARGO_TARGET_DIR
tdir=fuzz/target
flags=(-O -a --fuzz-dir fuzz --target-dir "$tdir")

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list --fuzz-dir fuzz)
fi

echo "== fuzz: building ${#targets[@]} targets with $toolchain"
cargo "+$toolchain" fuzz build "${flags[@]}"
# Run the binaries just built (not `cargo fuzz run`, which would rebuild
# from a working tree that may have changed meanwhile).
bin="$tdir/$(rustc -vV | sed -n 's/^host: //p')/release"

mkdir -p "$tdir/logs"
failed=()
printf '%-16s %6s %12s %8s %6s %6s %6s  %s\n' target seconds runs exec/s cov ft corpus result
for t in "${targets[@]}"; do
    work="$tdir/corpus/$t"
    mkdir -p "$work" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    log="$tdir/logs/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
    extra=()
    if [ -f "fuzz/dict/$t.dict" ]; then
        extra+=("-dict=fuzz/dict/$t.dict")
    fi
    start=$(date +%s)
    set +e
    "$bin/$t" "$work" "fuzz/corpus/$t" \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -artifact_prefix="fuzz/artifacts/$t/" "${extra[@]}" >"$log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    if [ "$rc" -eq 0 ]; then result=ok; else result="CRASH (exit $rc, log $log)"; failed+=("$t"); fi
    printf '%-16s %6s %12s %8s %6s %6s %6s  %s\n' "$t" "$took" "${runs:-?}" "${eps:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$toolchain" \
        "$took" "${runs:-}" "${cov:-}" "${ft:-}" "${corp:-}" "$rc" >>"$tdir/runs.tsv"
    if [ "$rc" -ne 0 ]; then
        grep -E 'panicked|ERROR: |SUMMARY|Test unit written' "$log" | head -8 || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/<target>/" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs} s each, no crash"
