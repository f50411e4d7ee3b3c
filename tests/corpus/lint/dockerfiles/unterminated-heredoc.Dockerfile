FROM debian:bookworm-slim
RUN <<EOT
  echo never closed
USER 10001
