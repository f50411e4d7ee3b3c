FROM postgres:16-bookworm
ENV POSTGRES_DB=app \
    TOKENIZERS_PARALLELISM=false
COPY init.sql /docker-entrypoint-initdb.d/
