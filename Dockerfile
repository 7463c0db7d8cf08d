# The dashboard's browser libraries, from the npm registry as package-lock.json pins them.
FROM node:20-slim AS assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml alembic.ini ./
COPY alembic ./alembic
COPY service ./service
COPY --from=assets /assets/node_modules /tmp/node_modules
RUN python -m service.ui.assets /tmp/node_modules && rm -rf /tmp/node_modules
RUN pip install --no-cache-dir --no-deps -e . && useradd --system --uid 10001 casestudies
USER casestudies
EXPOSE 8000
CMD ["casestudies", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
