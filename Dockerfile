# AgileNN inference server: `docker compose up server` (see docs/server.md).
# The shipped default bundle (models/repository/) is installed with the package, so the image
# serves it with no arguments; mount another repository and pass --model-dir to serve others.
#
# BASE: any Debian-like image with Python >= 3.10 and its venv module. Offline builds (no package
# index reachable): put wheels of the dependencies, setuptools and wheel into deploy/wheelhouse/
# (`pip wheel -w deploy/wheelhouse . setuptools wheel`) and build with
# --build-arg PIP_INSTALL_FLAGS=--no-index (tests/deploy/test_container.py does exactly this).
# The server's rANS decoder is the device's C coder when the build stage has a C compiler (setup.py,
# an optional extension; python:3.11 has gcc, -slim does not), else the same decoder in Python: same
# answers, ~20x slower per payload. The log's "rANS payload decoder" line says which.
ARG BASE=python:3.11-slim

# --- build stage: sources and wheels in, a virtual environment out ---------------------------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Sources only (.dockerignore keeps tests, data and caches out); a plain, non-editable install
# copies the packages and the bundle files into the venv's site-packages.
COPY pyproject.toml README.md ./
COPY codec ./codec
COPY models ./models
COPY proto ./proto
COPY server ./server
COPY device_agent ./device_agent
COPY training ./training
COPY benchmarks ./benchmarks
COPY firmware ./firmware
COPY datasets ./datasets
COPY deploy/wheelhouse ./wheelhouse
ARG PIP_INSTALL_FLAGS=""
RUN python3 -m venv /opt/agilenn \
    && /opt/agilenn/bin/pip install --find-links ./wheelhouse ${PIP_INSTALL_FLAGS} .

# --- runtime stage: the base plus the venv; no sources, wheels, compilers or torch -----------
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/agilenn/bin:$PATH
COPY --from=build /opt/agilenn /opt/agilenn

RUN useradd --system --uid 10001 --no-create-home agilenn
USER agilenn
WORKDIR /

EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "agilenn.server.healthcheck", "--address", "127.0.0.1:50051"]
# SIGTERM: health turns NOT_SERVING, in-flight work drains, then the process exits 0.
STOPSIGNAL SIGTERM
CMD ["agilenn-server", "--port", "50051", "--metrics-port", "9090"]
