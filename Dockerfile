# A small image that runs `kiln serve` for a project mounted at /project, its history in /data.
#
#   docker build -t kiln .
#   docker run -p 8000:8000 -v "$PWD:/project" -v kiln-data:/data --stop-timeout 45 kiln
#
# The first start prints the generated `admin password: ...` line to the container's log.
# SIGTERM drains: running runs get `--grace` (30 s) to finish, longer than Docker's default
# 10 s before it kills (hence --stop-timeout). The server runs as uid 10001 (kiln): the project
# must be readable by it, and writable if its runs write into it.
# Libraries the notebooks import go into the same environment as Kiln (the kernel's):
#   FROM kiln
#   USER root
#   RUN pip install --no-cache-dir pandas
#   USER kiln
# deploy/check-image.sh builds this image and smoke-tests it (without Docker: buildah/podman).

# Any image with Python >= 3.10 and its venv module; python:3.11-slim is what Kiln is tested on.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# Kiln and its dependencies in a virtualenv of their own, copied whole into the final image:
# one layer, and no wheels, pip cache or build tools left behind.
RUN python3 -m venv /opt/kiln
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/kiln/bin/pip install --no-cache-dir --disable-pip-version-check ".[server,postgres]" \
    && /opt/kiln/bin/python -m ipykernel install --sys-prefix --name python3

FROM ${BASE}
COPY --from=build /opt/kiln /opt/kiln
RUN useradd --create-home --uid 10001 --user-group kiln \
    && mkdir -p /data /project \
    && chown kiln:kiln /data
ENV PATH=/opt/kiln/bin:$PATH KILN_HOME=/data PYTHONUNBUFFERED=1
USER kiln
WORKDIR /project
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["kiln", "serve", "--host", "0.0.0.0", "--port", "8000", "--log-format", "json"]
