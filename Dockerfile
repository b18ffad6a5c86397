# The inference server image: onnxruntime + the model card, no PyTorch.
#   make docker-build               (docker build -t mlproject-serve .)
#   docker run -p 8000:8000 mlproject-serve
#   docker run -p 8000:8000 -v "$PWD/models:/models:ro" mlproject-serve   (mount another model)
# The model is baked in from models/ (run `make repro` or `dvc pull` first); a volume on
# /models replaces it. Settings are environment variables: see the README's serving section.

ARG PYTHON_VERSION=3.11

# --- build: install the serving dependencies, pinned by the lock, into a virtualenv ---------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml README.md ./
COPY src/ src/
# Only the `serve` extras: the lock pins them; torch and the training stack stay out.
RUN pip install --no-compile -c requirements/lock.txt ".[serve]" \
    && python -c "import mlproject.serve.app, sys; assert 'torch' not in sys.modules"

# --- runtime: the virtualenv and the model, run as an unprivileged user ---------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
ARG MODEL_DIR=models
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin serve
COPY --from=build /opt/venv /opt/venv
# The reference profile gives a regression model's predicted-value histogram its buckets.
COPY ${MODEL_DIR}/model.onnx ${MODEL_DIR}/model_card.json ${MODEL_DIR}/reference_profile.json /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_PATH=/models/model.onnx \
    MODEL_CARD=/models/model_card.json
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('PORT', '8000'), timeout=2)"]
ENTRYPOINT ["python", "-m", "mlproject.serve"]
