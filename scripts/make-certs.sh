#!/usr/bin/env bash
# Make every certificate a local TLS try-out needs, with openssl (test material only):
#
#   scripts/make-certs.sh [DIR]      # default DIR: ./certs (existing files are kept)
#
#   DIR/ca.crt, ca.key                    a local CA that signs everything below
#   DIR/edge/localhost.crt, .key          the gateway's server certificate (SAN localhost,
#                                         api.localhost, 127.0.0.1) — pass DIR/edge as --tls-dir
#   DIR/client/acme.crt, .key             a caller's client certificate (CN acme) and its
#   DIR/client/acme.sha256                SHA-256 fingerprint, for Subscription.clientCertificates
#   DIR/backend/server.crt, .key          a backend's server certificate (SAN weather-api.local,
#                                         127.0.0.1), for backendTLS.serverName
#   DIR/gateway/client.crt, .key          the gateway's client certificate towards backends (mTLS)
#   DIR/secrets.yaml                      Secrets for the manifest directory: clients-ca and
#                                         backend-ca (ca.crt), gw-client (tls.crt/tls.key)
#
# Keys are ECDSA P-256; certificates last 30 days. Never use these outside a laptop.
set -euo pipefail

DIR="${1:-certs}"
NS="${CERTS_NAMESPACE:-weather}"
DAYS=30
mkdir -p "$DIR"/{edge,client,backend,gateway}
cd "$DIR"

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

if [[ ! -f ca.crt ]]; then
    newkey ca.key
    openssl req -x509 -new -key ca.key -sha256 -days "$DAYS" -subj "/CN=Tollgate local try-out CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out ca.crt 2>/dev/null
fi

# issue NAME CN EXT: sign NAME.crt for NAME.key with the CA (EXT: extra x509v3 lines).
issue() {
    local name="$1" cn="$2" ext="$3"
    [[ -f "$name.crt" ]] && return 0
    newkey "$name.key"
    openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
    printf '%b\n' "$ext" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days "$DAYS" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

issue edge/localhost localhost \
    "subjectAltName=DNS:localhost,DNS:api.localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
issue client/acme acme "extendedKeyUsage=clientAuth"
issue backend/server weather-api.local \
    "subjectAltName=DNS:weather-api.local,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
issue gateway/client tollgate-gateway "extendedKeyUsage=clientAuth"

openssl x509 -in client/acme.crt -noout -fingerprint -sha256 | cut -d= -f2 > client/acme.sha256

indent() { sed 's/^/    /' "$1"; }
{
    for name in clients-ca backend-ca; do
        printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\nstringData:\n  ca.crt: |\n' "$name" "$NS"
        indent ca.crt
        printf -- '---\n'
    done
    printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: gw-client, namespace: %s}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n' "$NS"
    indent gateway/client.crt
    printf '  tls.key: |\n'
    indent gateway/client.key
} > secrets.yaml
chmod 600 secrets.yaml

echo "certificates in $(pwd); acme's fingerprint: $(cat client/acme.sha256)"
