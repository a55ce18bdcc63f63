#!/usr/bin/env bash
# The Gateway API standard-channel CRDs (the release Tollgate's types are generated from), for the
# operator's e2e tests and the conformance harness: fetched once from the pinned Go module through
# the Go module proxy and cached; the last stdout line is the path of one YAML file holding all of
# them, plus the release's ValidatingAdmissionPolicy against unsafe CRD upgrades, exactly as the
# release's standard install (apply it with `kubectl apply --server-side -f`). Idempotent; run
# from anywhere.
#
# Environment:
#   TOLLGATE_CACHE   cache root (default ~/.cache/tollgate)
set -euo pipefail

# Keep in step with scripts/gen-gateway-api.sh (the generated types' release).
GATEWAY_API_VERSION=v1.6.3
CACHE_ROOT=${TOLLGATE_CACHE:-${HOME:?HOME is not set}/.cache/tollgate}
out_dir="$CACHE_ROOT/gateway-api-$GATEWAY_API_VERSION"
out="$out_dir/standard-crds.yaml"

if [[ ! -s $out ]]; then
    command -v go >/dev/null || { echo "go is needed to fetch sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" >&2; exit 1; }
    # Outside any module, so the download does not touch a go.mod.
    dir=$(cd "${TMPDIR:-/tmp}" && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    crd_dir="$dir/config/crd/standard"
    [[ -d $crd_dir ]] || { echo "no CRDs at $crd_dir" >&2; exit 1; }
    mkdir -p "$out_dir"
    tmp=$(mktemp "$out_dir/.crds.XXXXXX")
    for f in "$crd_dir"/*.yaml; do
        echo "---"
        cat "$f"
    done >"$tmp"
    # Rename last: a concurrent or interrupted run never leaves a half-written file behind.
    mv "$tmp" "$out"
    echo "cached the Gateway API $GATEWAY_API_VERSION standard CRDs in $out" >&2
fi
echo "$out"
