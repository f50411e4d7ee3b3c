ARG APP_UID=0
FROM debian:bookworm-slim
ARG APP_UID
USER ${APP_UID}
