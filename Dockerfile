# CUDA runtime image for every IAC-LTH entry point (see README, "On a GPU host").
#
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t iac-lth .
#   docker run --gpus all --rm --user "$(id -u):$(id -g)" \
#     -v /data/ACDC/database:/raw/acdc:ro \
#     -v /srv/iac-store:/store \
#     iac-lth -e search_lth -P data=/store/prepared/acdc -P pretrained=models:/iac-unet-acdc-unet@champion
#
# Arguments starting with "-" are options of `mlflow run /opt/iac-lth --env-manager local`
# (one step per container); anything else runs as a command (`iac-lth python -c ...`).
# Host folders are mounted by absolute path. /store holds the SQLite tracking store, the run
# artifacts and, through links, the project's relative folders data/ and outputs/, so runs,
# models and prepared data outlive the container.
#
# PyTorch is exactly the locked one: torch==2.13.0 from PyPI is a CUDA 13.0 build that brings
# its CUDA runtime and cuDNN as pinned wheels (requirements.lock), so the base needs no CUDA
# toolkit, only the host's driver (>= 580, through the NVIDIA Container Toolkit). The lock is
# a constraint of every pip call in the image (PIP_CONSTRAINT), so nothing installed later can
# replace that torch, and the build fails unless the installed versions are the locked ones.
FROM python:3.11-slim-bookworm

ARG UID=1000

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/opt/iac-lth/requirements.lock \
    MLFLOW_DISABLE_TELEMETRY=true \
    GIT_PYTHON_REFRESH=quiet \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/home/iac

# git for MLflow's source tags; safe.directory '*' system-wide, so git works for any uid on
# folders owned by another (a mounted checkout, /opt/iac-lth).
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*' \
    && useradd --create-home --uid "${UID}" --shell /bin/bash iac \
    && mkdir -p /store && chown iac:iac /store && chmod 1777 /home/iac

WORKDIR /opt/iac-lth
# Dependencies first (a cached layer), every one at its locked version, with the GPU extra
# (nvidia-ml-py: GPU utilisation and memory in MLflow's system metrics).
COPY requirements.lock pyproject.toml README.md ./
COPY tools/lock.py tools/lock.py
COPY iac/__init__.py iac/__init__.py
RUN pip install -c requirements.lock -e '.[gpu]' \
    && python tools/lock.py --check-env --cuda
COPY . .
RUN pip install --no-deps -e . \
    && python tools/lock.py --check-env --cuda \
    && ln -s /store/data data && ln -s /store/outputs outputs && ln -s /store/mlruns mlruns

# The commit the image is built from: recorded on every run (iac.git_commit) and part of the
# code version that keys reused steps (iac/study/code_version.py); without it a hash of iac/,
# never a constant. Declared last so that a new commit does not rebuild the layers above.
ARG GIT_COMMIT=""
ENV IAC_GIT_COMMIT=${GIT_COMMIT} \
    MLFLOW_TRACKING_URI=sqlite:////store/mlflow.db
USER iac
VOLUME ["/store"]
WORKDIR /store
ENTRYPOINT ["/opt/iac-lth/deploy/docker-entrypoint.sh"]
CMD ["-e", "main"]
