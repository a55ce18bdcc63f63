# syntax=docker/dockerfile:1
#
# One image, both binaries: /usr/local/bin/tollgate-operator and /usr/local/bin/tollgate-proxy
# (the Helm chart sets `command` per Deployment).
#
#   docker build -t tollgate:dev .                                   # the product image
#   docker build --target demo-backend -t tollgate-demo-backend:dev .  # the demo API (e2e/kind)
#
# Why glibc and distroless/cc rather than static musl on scratch: the binaries are built exactly
# as CI builds them (`cargo build --release --locked`, the workspace's toolchain and fat-LTO
# release profile) with no cross target or musl C toolchain for ring; and musl's allocator is
# slow under the proxy's multi-threaded load. distroless/cc adds only glibc, libgcc and CA
# certificates (~25 MB) and runs as the unprivileged `nonroot` user (65532) by default.

# Must match rust-toolchain.toml (rustup would otherwise download that toolchain in the build).
ARG RUST_VERSION=1.95.0
ARG DEBIAN=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN} AS build
ARG RUST_VERSION
# The image's toolchain is the pinned one; this keeps rustup from fetching rust-toolchain.toml's
# rustfmt and clippy components, which a release build does not use.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION}
WORKDIR /src
# (The slim image has gcc and libc6-dev, which ring needs for its bit of C and assembly.)
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tollgate-operator -p tollgate-proxy \
    && mkdir -p /out \
    && cp target/release/tollgate-operator target/release/tollgate-proxy /out/

FROM build AS build-demo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tollgate-demo-backend \
    && cp target/release/tollgate-demo-backend /out/

# The YourWeather demo API, for e2e/kind/run.sh.
FROM gcr.io/distroless/cc-debian12:nonroot AS demo-backend
COPY --from=build-demo /out/tollgate-demo-backend /usr/local/bin/tollgate-demo-backend
USER 65532:65532
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/tollgate-demo-backend"]
CMD ["--listen", "0.0.0.0:9000"]

# The product image (the default target: last in this file).
FROM gcr.io/distroless/cc-debian12:nonroot AS tollgate
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="Tollgate API management on Kubernetes: tollgate-operator and tollgate-proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/tollgate" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/tollgate-operator /out/tollgate-proxy /usr/local/bin/
USER 65532:65532
# mimalloc (the proxy's allocator) hands freed pages back at once instead of after a delay: the
# memory a table reload used for parsing leaves RSS (~250 B instead of ~1 KB per subscription at
# 1M subscriptions), at no measured cost on the request path (fewer madvise calls, not more).
ENV MIMALLOC_PURGE_DELAY=0
# 8080 API traffic, 9901 proxy admin; 8081 operator metrics, 8082 operator table distribution.
EXPOSE 8080 9901 8081 8082
ENTRYPOINT ["/usr/local/bin/tollgate-proxy"]
