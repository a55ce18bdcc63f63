#!/usr/bin/env bash
# Table scale: for each N, the time to parse N subscriptions' manifests (reported apart), compile
# them from the parsed objects, build the proxy's runtime and swap it in, then to rebuild after a
# one-object change; and the runtime's memory per subscription. Release build, no sockets.
#
#   bench/scale.sh                       # N = 100000 and 1000000
#   COUNTS="10000 100000" bench/scale.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNTS="${COUNTS:-100000 1000000}"
# shellcheck disable=SC2086 # COUNTS is a list of numbers
MIMALLOC_PURGE_DELAY=0 cargo run -q --release --locked -p tollgate-proxy --example table_scale -- $COUNTS
