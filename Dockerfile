# A small image that runs `kiln serve` for a project mounted at /project, its history in /data.
#
#   docker build -t kiln .
#   docker run -p 8000:8000 -v "$PWD:/project" -v kiln-data:/data kiln
#
# The first start prints the generated `admin password: ...` line to the container's log.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[server,postgres]"

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "kiln-notebooks[server,postgres]" \
    && rm -rf /wheels \
    && python -m ipykernel install --sys-prefix --name python3 \
    && useradd --create-home --uid 10001 kiln \
    && mkdir /data /project && chown kiln:kiln /data
USER kiln
ENV KILN_HOME=/data PYTHONUNBUFFERED=1
WORKDIR /project
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["kiln", "serve", "--host", "0.0.0.0", "--port", "8000", "--log-format", "json"]
