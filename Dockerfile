FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml alembic.ini ./
COPY alembic ./alembic
COPY service ./service
RUN pip install --no-cache-dir --no-deps -e . && useradd --system --uid 10001 casestudies
USER casestudies
EXPOSE 8000
CMD ["casestudies", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
