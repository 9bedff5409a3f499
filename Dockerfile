# raysys image: the package and its console script on Python 3.11, run as a non-root user.
#   docker build -t raysys . && docker run --rm raysys
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin raysys

# Only what the wheel is built from; the source copy is removed once installed.
COPY pyproject.toml /tmp/src/
COPY raysys /tmp/src/raysys
COPY actors /tmp/src/actors
COPY serve /tmp/src/serve
RUN pip install /tmp/src && rm -rf /tmp/src

USER raysys
WORKDIR /home/raysys
# Ray Serve HTTP (RAYSYS_HTTP_PORT)
EXPOSE 8000

CMD ["raysys", "--help"]
