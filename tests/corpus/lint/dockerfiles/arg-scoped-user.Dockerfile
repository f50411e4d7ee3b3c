# syntax=docker/dockerfile:1
ARG APP_UID=10001
FROM --platform=$BUILDPLATFORM golang:1.22-bookworm AS build
RUN go build -o /out/app .
from debian:bookworm-slim
ARG APP_UID
ONBUILD USER root
COPY --from=build /out/app /usr/local/bin/app
user ${APP_UID}
ENTRYPOINT ["/usr/local/bin/app"]
