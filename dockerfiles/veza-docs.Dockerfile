# veza-docs: the static documentation site and a tiny static Go server, on a scratch image, run as UID 1001.
# GO_IMAGE defaults to the upstream builder; the pipeline passes the local one built by `invoke bases`.
ARG GO_IMAGE=golang:1.27-bookworm

# The builder runs on the build machine's platform and cross-compiles for the target (no emulation).
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod ./
COPY kit ./kit
COPY *.go ./
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG TARGETOS
ARG TARGETARCH
# BuildKit keeps Go's build and module caches between builds (cache mounts never enter the image): a
# one-file change recompiles one package. The legacy builder runs this step without the mounts.
RUN --mount=type=cache,id=veza-go-build,target=/root/.cache/go-build \
    --mount=type=cache,id=veza-go-mod,target=/go/pkg/mod \
    CGO_ENABLED=0 GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-$(go env GOARCH)}" go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X veza/docs/kit.Version=${VERSION} -X veza/docs/kit.Revision=${REVISION} -X veza/docs/kit.Created=${CREATED}" \
        -o /out/veza-docs . \
    && echo 'app:x:1001:1001:veza:/app:/sbin/nologin' > /out/passwd \
    && echo 'app:x:1001:' > /out/group

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/veza/veza-platform
LABEL org.opencontainers.image.title="veza-docs" \
      org.opencontainers.image.description="Veza documentation site" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/passwd /out/group /etc/
COPY --from=build /out/veza-docs /app/veza-docs
# Read-only for the runtime user: the site is content, not state.
COPY site /app/site
USER 1001:1001
ENV LISTEN_ADDR=:8083 \
    SITE_DIR=/app/site
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/app/veza-docs", "-healthcheck"]
ENTRYPOINT ["/app/veza-docs"]
