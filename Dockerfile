# syntax=docker/dockerfile:1
# corridor worker image: `docker build -t corridor:local .` then `docker run corridor:local` runs
# `corridor worker`; any other subcommand works too (`docker run corridor:local simulate ...`).
#
# Not built in this repository's CI (no Docker engine there); tests/ops/test_deploy.py lints it.
# For production, pin the base by digest as well (python:3.11.13-slim-bookworm@sha256:...).

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /app
# Dependencies first (cached while only the code changes), then the code.
# deploy/constraints.txt pins every distribution: the same image from the same commit.
COPY pyproject.toml README.md deploy/constraints.txt ./
RUN mkdir -p streams && touch streams/__init__.py \
    && /opt/venv/bin/pip install -c constraints.txt '.[rocksdb]' \
    && /opt/venv/bin/pip uninstall -y corridor
COPY streams/ streams/
COPY schemas/ schemas/
# Editable on purpose: streams/contract/codec.py reads the wire contract from <repo>/schemas, next to the
# package, which a regular (wheel) install would leave behind.
RUN /opt/venv/bin/pip install --no-deps -e . \
    && /opt/venv/bin/corridor --help >/dev/null \
    && /opt/venv/bin/python -c "from streams.contract.codec import Decoder; Decoder('shipments')"

FROM python:3.11.13-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CORRIDOR_DATA_DIR=/var/lib/corridor \
    CORRIDOR_WEB_HOST=0.0.0.0
RUN groupadd --system --gid 10001 corridor \
    && useradd --system --uid 10001 --gid corridor --home-dir /var/lib/corridor --no-create-home \
       --shell /usr/sbin/nologin corridor \
    && install -d -o corridor -g corridor -m 0750 /var/lib/corridor
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 6066
# /health is 200 once this worker has its assignment and has recovered its tables. The image listens
# on every interface (CORRIDOR_WEB_HOST=0.0.0.0: Prometheus scrapes it from outside the container;
# the corridor default, 127.0.0.1, suits a worker run on a laptop).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CORRIDOR_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["corridor"]
CMD ["worker"]
