"""`python -m mlproject.serve [--model M] [--card C] [--host H] [--port P] [...]`.

Flags override the environment (MODEL_PATH, MODEL_CARD, HOST, PORT, ...; see settings.py).
One process, one onnxruntime session: scale out with replicas, not workers, so each replica's
metrics and prediction log stay whole.
"""

from __future__ import annotations

import argparse
import sys

from .settings import ENV, Settings, SettingsError


def parse_args(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, (var, text) in ENV.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{text} (env {var})"
        )
    return vars(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    from .model import ModelLoadError

    try:
        settings = Settings.from_env(**parse_args(argv))
        from .app import create_app

        app = create_app(settings)
    except (SettingsError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    model = app.state.server.model
    print(
        f"serving {model.name} ({model.version}) on http://{settings.host}:{settings.port} "
        f"- loaded and warmed up in {model.load_seconds * 1000:.0f} ms",
        file=sys.stderr,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        http=settings.http,
        loop=settings.loop,
        log_level="info" if settings.access_log else "warning",
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
