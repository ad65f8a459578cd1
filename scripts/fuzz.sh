#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz layout) for a while; exits non-zero if any target
# finds a crash, leak, timeout or OOM (the input is left in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh                  # every target, 20 s each
#   scripts/fuzz.sh 600              # every target, 10 min each
#   scripts/fuzz.sh 60 xds_resource  # some targets
#
# Works on a stable toolchain: cargo-fuzz passes -Z flags to rustc, which RUSTC_BOOTSTRAP=1
# allows. Installs cargo-fuzz if it is missing. Environment:
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_NICE       nice level for the runs (default 0)
#   FUZZ_LOG_DIR    keep each target's libFuzzer output there as <target>.log
# New interesting inputs go to fuzz/corpus-work/<target>/ (not committed); the committed
# corpus in fuzz/corpus/<target>/ is read, never written. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-20}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
nice_level=${FUZZ_NICE:-0}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

# -a: debug assertions (overflow checks) on, as in tests.
flags=(--sanitizer "$sanitizer" -a)
nice -n "$nice_level" cargo fuzz build "${flags[@]}"

failed=()
summary=()
for t in "${targets[@]}"; do
    work=fuzz/corpus-work/$t
    mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log=$(mktemp)
    echo "fuzz.sh: $t for ${seconds}s" >&2
    if nice -n "$nice_level" cargo fuzz run "${flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        tail -n 60 "$log" >&2
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    summary+=("$(printf '%-18s %-6s %10s execs  cov %s' "$t" "$status" "${execs:-?}" "${cov:-?}")")
    if [ -n "${FUZZ_LOG_DIR:-}" ]; then
        mkdir -p "$FUZZ_LOG_DIR"
        mv "$log" "$FUZZ_LOG_DIR/$t.log"
    else
        rm -f "$log"
    fi
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
