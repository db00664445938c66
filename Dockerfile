# FD-Edge appliance image, x86-64.
#
#   docker build -t fdedge .
#   docker run -d --name fdedge -p 5000:5000 -v fdedge-data:/data -e FDEDGE_TOKEN=change-me fdedge
#   dashboard: http://localhost:5000/ (report /report, table /dashboard); sensors POST to :5000/send
#
# Stages:
#   convert  the build extra (TensorFlow, tf2onnx, scikit-learn): `fdedge convert --if-stale` turns
#            models/default's Keras model + scalers into model.onnx + scalers.npz + manifest.json
#            (platform-independent files; a no-op when the committed ones are current)
#   venv     the runtime dependencies only, from constraints.txt's exact pins, in /opt/fdedge
#   runtime  the venv, the three converted files and web/; non-root, database in the /data volume
# A Raspberry Pi (linux/arm64) image is built from Dockerfile.arm64.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- convert
FROM ${PYTHON_IMAGE} AS convert
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY edge edge
COPY convert convert
COPY simulator simulator
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install -c constraints.txt '.[build]'
COPY models/default models/default
RUN /opt/build/bin/fdedge convert --model-dir models/default --if-stale \
 && mkdir -p /artifacts \
 && cp models/default/model.onnx models/default/scalers.npz models/default/manifest.json /artifacts/ \
 && (cp models/default/MODEL_CARD.md /artifacts/ 2>/dev/null || true)

# --------------------------------------------------------------------------- venv
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY edge edge
COPY convert convert
COPY simulator simulator
# `.` without extras: onnxruntime, numpy, starlette, uvicorn, sse-starlette, uvloop, httptools,
# prometheus-client. Then pip/setuptools leave the venv (the image never installs again), and so
# do numpy's test suites and onnxruntime's offline tooling (transformers/quantization
# optimisers), which the appliance never imports. uvloop's extension ships with its symbol table
# (13.6 MB, 1.6 MB stripped): binutils' strip runs here and stays out of the runtime stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/fdedge \
 && /opt/fdedge/bin/pip install -c constraints.txt . \
 && /opt/fdedge/bin/pip uninstall -y -q pip setuptools \
 && cd /opt/fdedge/lib/python3*/site-packages \
 && rm -rf numpy/*/tests numpy/_core/tests onnxruntime/transformers onnxruntime/quantization \
 && find . -name '*.so' -path './uvloop/*' -exec strip --strip-unneeded {} + \
 && /opt/fdedge/bin/python -c "import edge.serve, edge.http.app, onnxruntime, numpy, uvloop, httptools, sse_starlette"

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="FD-Edge" \
      org.opencontainers.image.description="Machine fault detection appliance: ONNX scoring, SQLite storage, live dashboard" \
      org.opencontainers.image.licenses="MIT"
# onnxruntime 1.32 (pinned) ships 1DS telemetry on Linux: without ORT_DISABLE_TELEMETRY=1 it resolves
# mobile.events.data.microsoft.com and keeps an offline event cache under $HOME at every start.
# One intra-op thread: one uvicorn worker scores single readings inline.
ENV PATH=/opt/fdedge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FDEDGE_HOST=0.0.0.0 \
    FDEDGE_PORT=5000 \
    FDEDGE_DATA_DIR=/data \
    FDEDGE_MODEL_DIR=/opt/fdedge/models/default \
    FDEDGE_WEB_DIR=/opt/fdedge/web \
    FDEDGE_THREADS=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MALLOC_ARENA_MAX=2 \
    ORT_DISABLE_TELEMETRY=1
RUN groupadd --system --gid 10001 fdedge \
 && useradd --system --uid 10001 --gid fdedge --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fdedge \
 && mkdir -p /data && chown fdedge:fdedge /data && chmod 0750 /data
COPY --from=venv /opt/fdedge /opt/fdedge
COPY --from=convert /artifacts/ /opt/fdedge/models/default/
COPY web /opt/fdedge/web
USER fdedge:fdedge
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; u = 'http://127.0.0.1:%s/healthz' % os.environ.get('FDEDGE_PORT', '5000'); sys.exit(0 if urllib.request.urlopen(u, timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["fdedge", "serve"]
