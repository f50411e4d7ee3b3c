# veza-chat-server: a static Rust binary (std only, glibc linked statically) on a scratch image, run as UID 1001.
# RUST_IMAGE defaults to the upstream builder; the pipeline passes the local one built by `invoke bases`
# (--build-arg RUST_IMAGE=veza-local/rust:bookworm) where upstream images cannot be pulled.
# The code builds with rustc >= 1.63 (Debian bookworm) and with rust:1.77.
ARG RUST_IMAGE=rust:1.77-bookworm

# The builder runs on the build machine's platform (no emulation) and cross-compiles for another target.
FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS build
# Cross-compiling (TARGETARCH differs from BUILDARCH, e.g. arm64 on an amd64 machine): the target's linker and
# static glibc (Debian's gcc-<triple> and libc6-dev-<arch>-cross) and the target's Rust standard library —
# from Debian's <arch> packages (multiarch) with Debian's rustc, else from rustup. A native build (and the
# legacy builder, which sets no TARGETARCH) installs nothing here. Not pinned: libstd-rust-dev must be the
# exact version of the base image's rustc, which apt resolves (a pin would break at the base's next update).
ARG TARGETARCH
ARG BUILDARCH
# hadolint ignore=DL3008
RUN if [ -n "${TARGETARCH}" ] && [ "${TARGETARCH}" != "${BUILDARCH}" ]; then \
        case "${TARGETARCH}" in arm64) gnu=aarch64 ;; amd64) gnu=x86_64 ;; \
            *) echo "no Rust cross toolchain recipe for ${TARGETARCH}" >&2; exit 1 ;; esac \
        && dpkg --add-architecture "${TARGETARCH}" && apt-get update \
        && apt-get install -y --no-install-recommends "gcc-${gnu}-linux-gnu" \
               "libc6-dev-${TARGETARCH}-cross" \
        && if command -v rustup >/dev/null; then rustup target add "${gnu}-unknown-linux-gnu"; \
           else apt-get install -y --no-install-recommends "libstd-rust-dev:${TARGETARCH}"; fi \
        && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# +crt-static with an explicit target gives a fully static executable (no dynamic loader in scratch).
# BuildKit keeps Cargo's registry and target directories between builds (cache mounts never enter the
# image; the binary is copied out; each target has its own directory in it). The image's release build
# trades fat LTO and one codegen unit (Cargo.toml's profile, for local `cargo build --release`) for
# incremental compilation: measured here, a one-line change recompiles in 0.5 s instead of 32 s, for a
# 453 KB binary instead of 392 KB.
# No build metadata reaches the compiler (no ARG before this step): the binary reads VERSION/REVISION/CREATED
# at run time from the environment the last instruction sets. A value `option_env!` compiled in changed with
# every commit, and Cargo then recompiled without the benefit of its incremental cache (2.4 s instead of
# 0.5 s, measured here). This step now runs only when the sources change.
# The target directory is shared by every tree that builds here, and Cargo 1.63 compares mtimes, not
# contents: touching main.rs makes it recompile the crate whenever this step runs (rustc's incremental
# cache still reuses what did not change: 0.4–0.5 s after a one-line change).
# The legacy builder runs this step without the mounts (a full compile, same binary).
RUN --mount=type=cache,id=veza-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=veza-chat-server-target,target=/src/target,sharing=locked \
    case "${TARGETARCH:-}" in arm64) gnu=aarch64 ;; amd64) gnu=x86_64 ;; *) gnu="$(uname -m)" ;; esac \
    && target="${gnu}-unknown-linux-gnu" \
    && if [ "${gnu}" != "$(uname -m)" ]; then case "${gnu}" in \
           aarch64) export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc ;; \
           x86_64) export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc ;; esac; fi \
    && touch src/main.rs \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_INCREMENTAL=true \
       cargo build --release --locked --offline --target "${target}" \
    && mkdir -p /out \
    && cp "target/${target}/release/veza-chat-server" /out/veza-chat-server \
    && echo 'app:x:1001:1001:veza:/app:/sbin/nologin' > /out/passwd \
    && echo 'app:x:1001:' > /out/group

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/veza/veza-platform
LABEL org.opencontainers.image.title="veza-chat-server" \
      org.opencontainers.image.description="Veza chat server (publishes to NATS)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/passwd /out/group /etc/
COPY --from=build /out/veza-chat-server /app/veza-chat-server
USER 1001:1001
ENV LISTEN_ADDR=0.0.0.0:8081
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/app/veza-chat-server", "-healthcheck"]
ENTRYPOINT ["/app/veza-chat-server"]
# Build metadata last (a new commit changes only the image's configuration): /version, /metrics and the
# first log line report these.
ENV VEZA_VERSION="${VERSION}" VEZA_REVISION="${REVISION}" VEZA_CREATED="${CREATED}"
