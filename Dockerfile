# syntax=docker/dockerfile:1
# raysys on the official Ray image of the pinned Ray version (the one pyproject's ray resolves to;
# tests/deploy/test_container.py checks they match). Used by docker-compose.yml and by the
# KubeRay manifests in cluster/kuberay/.
#   docker build -t raysys:0.1.0 .
# Nothing secret is baked in: Redis credentials, the API token and the signing keyring reach the
# container at run time (environment or a read-only mounted file).

# --- builder: the raysys wheel from the source tree ------------------------------------------
FROM rayproject/ray:2.60.0-py311 AS builder
USER 1000:100
WORKDIR /home/ray/build
COPY --chown=1000:100 pyproject.toml ./
COPY --chown=1000:100 raysys ./raysys
COPY --chown=1000:100 actors ./actors
COPY --chown=1000:100 serve ./serve
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels .

# --- runtime: Ray plus the wheel, as the image's non-root `ray` user (uid 1000) -----------------
FROM rayproject/ray:2.60.0-py311
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
USER 1000:100
# The wheel is bind-mounted for the install only: no copy of it stays in a layer. Ray is already
# in the image at the pinned version, so pip adds only raysys's other dependencies.
RUN --mount=type=bind,from=builder,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir /tmp/wheels/raysys-*.whl
# The examples, for `ray job submit --working-dir` and cluster/kuberay/rayjob.yaml.
COPY examples /opt/raysys/examples
WORKDIR /home/ray
# Ray Serve HTTP (RAYSYS_HTTP_PORT), Ray dashboard and job API (token auth).
EXPOSE 8000 8265

CMD ["raysys", "--help"]
