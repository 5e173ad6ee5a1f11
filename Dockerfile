# One image for the three Canopy services; the command picks the service.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PATH=/app/.venv/bin:$PATH

RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app

# Dependencies first, so that code changes reuse this layer.
COPY pyproject.toml uv.lock ./
COPY libs/canopy-api/pyproject.toml libs/canopy-api/pyproject.toml
COPY libs/canopy-core/pyproject.toml libs/canopy-core/pyproject.toml
COPY libs/canopy-cli/pyproject.toml libs/canopy-cli/pyproject.toml
COPY services/integration/pyproject.toml services/integration/pyproject.toml
COPY services/discovery/pyproject.toml services/discovery/pyproject.toml
COPY services/permissions/pyproject.toml services/permissions/pyproject.toml
RUN uv sync --frozen --no-dev --no-install-workspace

COPY libs libs
COPY services services
RUN uv sync --frozen --no-dev

RUN useradd --system --uid 10001 canopy
USER canopy
EXPOSE 50051 50052 50053 9151 9152 9153
CMD ["canopy-permissions"]
