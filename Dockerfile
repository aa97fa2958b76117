# The tokensync image used by compose.yaml: the relay, the API, the region workers and gates.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY producer ./producer
COPY workers ./workers
COPY gate ./gate
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
CMD ["tokensync", "--help"]
