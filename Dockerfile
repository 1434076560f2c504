# mpchat's image: two stages, slim Python, runtime dependencies only, a non-root user.
# Build: docker build -t mpchat .   Run: docs/deployment.md (Docker, WeChat Cloud Run).
# Linted by hadolint in tests/test_container.py; built and run by podman in tests/container.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# pip reads these; unset, it installs from PyPI. Where there is no PyPI, a wheelhouse stands in:
# tests/container mounts one at /wheels and passes PIP_FIND_LINKS=/wheels PIP_NO_INDEX=1.
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
WORKDIR /build
RUN python -m venv /opt/mpchat
# The lock first, so a change of the code alone reuses this layer.
COPY requirements.lock ./
# The dependencies compiled here too: a change of the code alone recompiles only mpchat.
RUN /opt/mpchat/bin/pip install --no-compile -r requirements.lock \
    && /opt/mpchat/bin/python -m compileall -q -j 0 /opt/mpchat/lib
COPY pyproject.toml README.md ./
COPY src ./src
# Installed, compiled, and the safety filter's folding table prebuilt (a cold start loads it).
RUN /opt/mpchat/bin/pip install --no-compile --no-deps . \
    && /opt/mpchat/bin/python -m compileall -q -j 0 /opt/mpchat/lib/python3*/site-packages/mpchat \
    && /opt/mpchat/bin/python -m mpchat.safety.foldtable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 mpchat \
    && useradd --system --uid 10001 --gid mpchat --home-dir /var/lib/mpchat --create-home \
       --shell /usr/sbin/nologin mpchat \
    && chmod 0700 /var/lib/mpchat
COPY --from=build /opt/mpchat /opt/mpchat
ENV PATH=/opt/mpchat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPCHAT_HOST=0.0.0.0 \
    MPCHAT_PORT=8000 \
    MPCHAT_DATA_DIR=/var/lib/mpchat/data
USER 10001:10001
WORKDIR /var/lib/mpchat
EXPOSE 8000
# Liveness only (no dependency); readiness is GET /readyz, for the load balancer.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MPCHAT_PORT', '8000'), timeout=2)"]
# SIGTERM: stop accepting, let streams and answers under way finish (MPCHAT_SHUTDOWN_TIMEOUT).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mpchat"]
CMD ["serve"]
