FROM python:3.12-slim
ENV DATABASE_URL=postgres://app:hunter2@db:5432/app \
    CACHE_URL=redis://cache:6379/0 \
    SECRET_KEY_FILE=/run/secrets/key
ARG PIP_INDEX_TOKEN
RUN --mount=type=secret,id=pip pip install --no-cache-dir flask==3.0.3
RUN <<EOT
  git clone https://ci:glpat-abcdefghij0123456789@git.example.com/app.git /src
EOT
USER 10001
