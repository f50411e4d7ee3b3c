FROM python:3.12-slim
COPY <<'INI' /etc/app/app.ini
[database]
host = db
password = hunter2
pool_size = 10
INI
USER 10001
