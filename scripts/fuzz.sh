#!/usr/bin/env bash
# Run the cargo-fuzz targets in fuzz/ (all, or the ones named) for FUZZ_SECONDS each, one after
# the other, and print the executions per target. Installs cargo-fuzz when it is missing.
#
#   FUZZ_SECONDS=60      seconds per target
#   FUZZ_SANITIZER=none  none (default: the crates forbid unsafe code, and a build without a
#                        sanitizer runs several times more inputs) or address
#   FUZZ_TOOLCHAIN=nightly
#
# New interesting inputs go to fuzz/work/<target>/ (git-ignored), read together with the
# committed corpus fuzz/corpus/<target>/. A crash stops that target, leaves its reproducer in
# fuzz/artifacts/<target>/ and makes the script fail at the end. To keep a regression, fix it and
# commit the reproducer there: proxy/tests/fuzz_corpus.rs and crds/tests/fuzz_corpus.rs replay it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
target_dir=${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}
target_dir=${target_dir:-fuzz/target}

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

fuzz_build=(-s "$sanitizer" --debug-assertions --target-dir "$target_dir")
cargo "+$toolchain" fuzz build "${fuzz_build[@]}"

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    log="fuzz/work/$t.log"
    echo "== $t: ${seconds}s"
    if cargo "+$toolchain" fuzz run "${fuzz_build[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        2>"$log"; then
        result=ok
    else
        result=CRASH
        failed+=("$t")
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    summary+=("$(printf '%-10s %-6s %12s executions' "$t" "$result" "${execs:-?}")")
    tail -n 3 "$log"
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (reproducers in fuzz/artifacts/<target>/, logs in fuzz/work/)" >&2
    exit 1
fi
