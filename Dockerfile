# syntax=docker/dockerfile:1
# seqrank in one image: every pipeline step, training, the benchmarks and the ranking service.
#
#   CPU (default):  docker build -t seqrank .
#   CUDA:           docker build -t seqrank:cuda \
#                     --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# Python is 3.11 on every base, and the same build of it: no base's own Python is used. Ubuntu 24.04
# and the CUDA images on it ship 3.12, 22.04 ships 3.10, and the deadsnakes PPA would add a
# third-party apt source whose builds move under the same version. uv installs a pinned
# python-build-standalone CPython instead (self-contained, needs glibc 2.17+), so the CPU and the
# CUDA image run the same interpreter down to the patch release. tests/unit/test_dockerfile.py
# checks this file statically (the pins against requirements.lock, the Python, what is copied).
ARG BASE=ubuntu:24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
# Beam's worker boot program, from the Beam release requirements.lock pins.
ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:2.77.0

FROM ${UV_IMAGE} AS uv
FROM ${BEAM_SDK_IMAGE} AS beam

FROM ${BASE}
ARG PYTHON_VERSION=3.11.18
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false

# requests-based clients carry their own CA bundle (certifi); Python's ssl module (Redis over TLS,
# urllib) reads the system one, which ubuntu:24.04 lacks. Unpinned: each base's archive has its own
# version, and the CA bundle is what should stay current.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && \
    rm -rf /var/lib/apt/lists/*

# uv is mounted for this step only, so it is not in the image; the venv gets the interpreter's own
# bundled pip (ensurepip), fixed by PYTHON_VERSION.
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv \
    export UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CACHE=1 && \
    uv python install --no-bin "${PYTHON_VERSION}" && \
    "$(uv python find --managed-python "${PYTHON_VERSION}")" -m venv /opt/venv && \
    /opt/venv/bin/python -c 'import platform, sys; assert platform.python_version() == sys.argv[1], platform.python_version()' \
      "${PYTHON_VERSION}"
ENV PATH=/opt/venv/bin:$PATH

RUN groupadd --gid 10001 seqrank && useradd --create-home --uid 10001 --gid 10001 seqrank
WORKDIR /opt/seqrank

# torch alone from the index of the build wanted (CPU or CUDA): that index holds the torch wheels
# but not every version of their dependencies the lock pins, so those come from PyPI with the rest
# below, held to requirements.lock (`2.13.0+cpu` and `2.13.0+cu128` both satisfy `torch==2.13.0`).
COPY pyproject.toml requirements.lock README.md ./
RUN pip install --no-deps --index-url "${TORCH_INDEX}" torch==2.13.0

COPY seqrank ./seqrank
COPY simulator ./simulator
COPY components ./components
COPY feature_repo ./feature_repo
COPY training ./training
COPY serving ./serving
COPY pipelines ./pipelines
COPY benchmarks ./benchmarks
RUN pip install -c requirements.lock . && pip check

# Loopback inside a container is unreachable from outside it: ServeConfig reads this variable
# (seqrank/config.py), so `seqrank serve` binds every interface here and 127.0.0.1 on a laptop.
ENV SEQRANK_SERVE_HOST=0.0.0.0

# The same image is Beam's SDK worker container: Dataflow and the DOCKER environment of Flink and
# Spark start it with the boot program's flags alone (--id=..., --*_endpoint=...), a worker pool
# sidecar (EXTERNAL environment) with --worker_pool; those go to Beam's boot program, anything else
# is a seqrank command. kfp and KServe name their own command and skip this.
COPY --from=beam /opt/apache/beam /opt/apache/beam
COPY --chmod=755 <<'EOF' /usr/local/bin/seqrank-entrypoint
#!/bin/sh
case "${1:-}" in
  --id=*|--worker_pool*|--*_endpoint=*|--semi_persist_dir=*) exec /opt/apache/beam/boot "$@" ;;
  *) exec seqrank "$@" ;;
esac
EOF

# Numeric, so Kubernetes can check runAsNonRoot against it.
USER 10001:10001
WORKDIR /home/seqrank
EXPOSE 8700
ENTRYPOINT ["/usr/local/bin/seqrank-entrypoint"]
CMD ["--help"]
