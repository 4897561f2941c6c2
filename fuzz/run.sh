#!/usr/bin/env bash
# Runs the fuzz properties (see fuzz/README.md) with many cases, optimised, and prints how long
# each crate's took. The first argument is the number of cases per property (default 1,000,000).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CASES=${1:-1000000}
export PROPTEST_CASES=$CASES
# A failing case is shrunk for at most a minute, then reported.
export PROPTEST_MAX_SHRINK_TIME=60000
cd "$ROOT"
for target in "billing-stripe signature::fuzz" "billing-service webhook::envelope::fuzz"; do
    read -r crate filter <<<"$target"
    started=$(date +%s)
    cargo test --release -p "$crate" --lib "$filter" -- --test-threads 2
    echo "== $crate $filter: $CASES cases per property in $(($(date +%s) - started)) s" >&2
done
