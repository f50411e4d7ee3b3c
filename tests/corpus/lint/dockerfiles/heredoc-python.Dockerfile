# syntax=docker/dockerfile:1
FROM python:3.12-slim
RUN useradd -u 10001 app
USER 10001
COPY <<PY /app/main.py
from http.server import HTTPServer, SimpleHTTPRequestHandler
HTTPServer(("", 8000), SimpleHTTPRequestHandler).serve_forever()
PY
CMD ["python", "/app/main.py"]
COPY <<ENV /app/.env
LOG_LEVEL=info
TOKENIZERS_PARALLELISM=false
ENV
