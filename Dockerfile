# seqrank in one image: the pipeline steps, training and the ranking service.
# CPU by default; for CUDA: docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false

# CUDA bases ship without Python; the slim base already has it.
RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv && \
      rm -rf /var/lib/apt/lists/*; \
    fi

RUN useradd --create-home --uid 10001 seqrank
WORKDIR /opt/seqrank
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY pyproject.toml requirements.lock README.md ./
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0 && \
    grep -v '^torch==' requirements.lock > /tmp/constraints.txt
COPY seqrank ./seqrank
COPY simulator ./simulator
COPY components ./components
COPY feature_repo ./feature_repo
COPY training ./training
COPY serving ./serving
COPY pipelines ./pipelines
RUN pip install -c /tmp/constraints.txt .

USER seqrank
WORKDIR /home/seqrank
EXPOSE 8700
ENTRYPOINT ["seqrank"]
CMD ["--help"]
