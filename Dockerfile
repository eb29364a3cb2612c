# syntax=docker/dockerfile:1
#
# Tribune hub image: a release build of `tribune-hub` on a distroless base
# (glibc, no shell, no package manager), running as an unprivileged user with
# a read-only root filesystem.
#
#   docker build -t tribune-hub:dev .
#   docker run --rm -p 8080:8080 tribune-hub:dev            # embedded bus
#   docker run --rm -p 8080:8080 tribune-hub:dev --config /etc/tribune/tribune.toml --demo
#
# The load generator for in-cluster load tests (k8s/loadtest):
#   docker build --target loadtest -t tribune-loadtest:dev .
#
# Kubernetes mounts its ConfigMap over /etc/tribune (k8s/base).

ARG RUST_VERSION=1.95.0

# ---- build ----------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# Declared again: an ARG before FROM is only visible to FROM lines.
ARG RUST_VERSION
WORKDIR /src
# Stripped: symbols are of no use in the image, and half its size.
# The image's toolchain, not rust-toolchain.toml's component list (rustfmt
# and clippy are of no use here and would be downloaded).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never \
    RUSTUP_TOOLCHAIN=${RUST_VERSION}
COPY . .
# The workspace needs every member's manifest; only the hub is built (it
# embeds client-sdk/js/src and client-sdk/widget, hence the whole context). The
# cache mounts keep the registry and target directory between builds, so the
# binary is copied out of the (unpersisted) target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tribune-hub --bin tribune-hub \
    && install -D -m 0755 target/release/tribune-hub /out/usr/local/bin/tribune-hub \
    && install -d /out/etc/tribune \
    && printf '%s\n' \
        '# Image default: all interfaces, embedded bus. Kubernetes mounts its own.' \
        'listen = "0.0.0.0:8080"' \
        > /out/etc/tribune/tribune.toml

FROM build AS build-loadtest
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tribune-loadtest --bin tribune-loadtest \
    && install -D -m 0755 target/release/tribune-loadtest /out/usr/local/bin/tribune-loadtest

# ---- load generator (only with --target loadtest) --------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS loadtest
COPY --from=build-loadtest /out/usr/local/bin/tribune-loadtest /usr/local/bin/tribune-loadtest
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tribune-loadtest"]

# ---- hub (the default target) ----------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS hub
COPY --from=build /out/ /
# distroless' "nonroot" user; the Kubernetes manifests use the same ids.
USER 65532:65532
EXPOSE 8080
# The hub drains on SIGTERM: not ready, stop accepting, close fans in
# batches over drain.window_ms, exit within drain.grace_ms.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tribune-hub"]
CMD ["--config", "/etc/tribune/tribune.toml"]
