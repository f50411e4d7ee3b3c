ARG GO_IMAGE=golang:1.22-bookworm
FROM ${GO_IMAGE} AS build
WORKDIR /src
RUN go build -o /out/app .

FROM debian:bookworm-slim AS runtime
RUN useradd -u 10001 app
USER 10001

FROM runtime
COPY --from=build /out/app /usr/local/bin/app
ENTRYPOINT ["/usr/local/bin/app"]
