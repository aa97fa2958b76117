# The tokensync image used by compose.yaml: the relay, the API, the region workers and gates.
# It installs the wheel with the extras those services need; the benchmarks and the local
# stack's launcher stay out (`tokensync bench` and `tokensync stack` say which extra they need).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY producer ./producer
COPY workers ./workers
COPY gate ./gate
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG EXTRAS=producer,worker,gate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/tokensync-*.whl)[${EXTRAS}]" && rm -rf /wheels
USER nobody
ENTRYPOINT []
CMD ["tokensync", "--help"]
