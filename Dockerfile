# CUDA runtime image for every IAC-LTH entry point.
#
#   docker build -t iac-lth .
#   docker run --gpus all --rm \
#     -v /data/ACDC/database:/data/acdc:ro \
#     -v "$PWD/mlruns-store":/store \
#     -e MLFLOW_TRACKING_URI=sqlite:////store/mlflow.db \
#     iac-lth mlflow run /opt/iac-lth -e search_lth --env-manager local \
#       -P data=prepared/acdc -P backbone=unet
#
# The working directory is the mounted /store: the SQLite store, the run
# artifacts (./mlruns) and prepared data (relative paths) all land there, so
# runs and models outlive the container. With a tracking server instead, set
# MLFLOW_TRACKING_URI=http://host:5000 and the server's artifact store is used.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    GIT_PYTHON_REFRESH=quiet

RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/iac-lth
# Dependencies first (cached layer): the base image already has a CUDA torch,
# which satisfies the torch requirement, so pip keeps it.
COPY pyproject.toml README.md ./
COPY iac/__init__.py iac/__init__.py
RUN pip install -e .
COPY . .
RUN pip install -e . \
    && git config --global --add safe.directory /opt/iac-lth \
    && (git init -q 2>/dev/null || true)

ENV MLFLOW_TRACKING_URI=sqlite:////store/mlflow.db
VOLUME ["/store"]
WORKDIR /store
CMD ["mlflow", "run", "/opt/iac-lth", "-e", "main", "--env-manager", "local"]
