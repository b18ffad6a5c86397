"""MLflow tracking, as an option: off unless MLFLOW_TRACKING_URI is set or `tracking.mlflow: true`
is in conf/ (then MLflow's own default store, ./mlruns, is used when no URI is set).

    python -m mlproject.pipeline.tracking log        log the pipeline's last results as one MLflow run
    python -m mlproject.pipeline.tracking register VERSION [NAME]
                                            register that run's model in MLflow's registry

One run per trained model, logged when the export stage has written it (export calls `log_run`):
params (params.yaml, flattened), per-epoch metrics (reports/train/plots, with their step),
test metrics, and the ONNX model and model card as artifacts under `model/`. Tags carry the model's
sha256 and the git commit, so `make register` finds the run of the committed model and registers
it too. mlflow is imported only when tracking is on: install it with the `mlflow` extra
(`make install EXTRAS=...,mlflow`; the dev group has it for the tests).
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from ..core.cli import entry_point, subcommands
from ..core.errors import ProjectError
from ..core.lineage import git_commit
from ..core.paths import EVAL_METRICS, MODEL_CARD, ONNX_MODEL, PARAMS, TRAIN_REPORTS

EPOCH_METRICS = TRAIN_REPORTS / "plots/metrics"
TEST_METRICS = EVAL_METRICS
MODEL = ONNX_MODEL
CARD = MODEL_CARD
ARTIFACT_DIR = "model"
DEFAULT_EXPERIMENT = "mlproject"


class TrackingError(ProjectError, RuntimeError):
    """Tracking is on but cannot work; the message names the setting or file."""


def _params(root: Path) -> dict:
    path = root / PARAMS
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def settings(params: dict | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    conf = (params or {}).get("tracking") or {}
    return {
        "enabled": bool(env.get("MLFLOW_TRACKING_URI") or conf.get("mlflow")),
        "experiment": env.get("MLFLOW_EXPERIMENT_NAME")
        or conf.get("experiment")
        or DEFAULT_EXPERIMENT,
    }


def enabled(params: dict | None = None) -> bool:
    return settings(params)["enabled"]


def _mlflow():
    # Like DVC's (DVC_NO_ANALYTICS), MLflow's usage telemetry stays off unless asked for.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError:
        raise TrackingError(
            "MLflow tracking is on (MLFLOW_TRACKING_URI or tracking.mlflow) but mlflow is not "
            "installed: make install EXTRAS=train,serve,report,monitor,explain,dev,mlflow"
        ) from None
    return mlflow


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def epoch_metrics(root: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric name: [(step, value)]} from DVCLive's TSV files (train/loss, val/accuracy, lr)."""
    series = {}
    base = root / EPOCH_METRICS
    for path in sorted(base.rglob("*.tsv")):
        name = str(path.relative_to(base).with_suffix(""))
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        column = path.stem
        series[name] = [(int(r["step"]), float(r[column])) for r in rows]
    return series


def log_run(root: str | Path = ".", params: dict | None = None) -> str | None:
    """Log the pipeline's results in `root` as one MLflow run; its id, or None when off."""
    root = Path(root)
    params = _params(root) if params is None else params
    conf = settings(params)
    if not conf["enabled"]:
        return None
    for required in (MODEL, CARD):
        if not (root / required).is_file():
            raise TrackingError(f"{root / required}: missing; run the export stage first")
    mlflow = _mlflow()
    card = json.loads((root / CARD).read_text())
    mlflow.set_experiment(conf["experiment"])
    commit = git_commit(root)["commit"] or ""  # the commit whose outputs are logged
    with mlflow.start_run(run_name=f"{card.get('name')}-{card['sha256'][:8]}") as run:
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # the API takes at most 100 params per call
            mlflow.log_params(dict(items[i : i + 100]))
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [
            Metric(name, value, now, step)
            for name, series in epoch_metrics(root).items()
            for step, value in series
        ]
        client = mlflow.MlflowClient()
        for i in range(0, len(points), 1000):  # one call per 1,000 points, not one per point
            client.log_batch(run.info.run_id, metrics=points[i : i + 1000])
        if (root / TEST_METRICS).is_file():
            test = json.loads((root / TEST_METRICS).read_text())
            mlflow.log_metrics(
                {f"test/{k}": float(v) for k, v in test.items() if isinstance(v, int | float)}
            )
        mlflow.set_tags(
            {
                "model.name": card.get("name", ""),
                "model.sha256": card["sha256"],
                "git.commit": commit,
            }
        )
        mlflow.log_artifact(str(root / MODEL), ARTIFACT_DIR)
        mlflow.log_artifact(str(root / CARD), ARTIFACT_DIR)
        print(f"mlflow: run {run.info.run_id} in experiment '{conf['experiment']}'")
        return run.info.run_id


def register(version: str, name: str | None = None, root: str | Path = ".") -> str | None:
    """Register the committed model's run (found by the model's sha256) as a version of `name`
    (the git registry's artifact name; default the card's), tagged with the registry version
    (e.g. v1.2.0); None when off."""
    root = Path(root)
    params = _params(root)
    conf = settings(params)
    if not conf["enabled"]:
        return None
    mlflow = _mlflow()
    card = json.loads((root / CARD).read_text())
    runs = mlflow.search_runs(
        experiment_names=[conf["experiment"]],
        filter_string=f"tags.`model.sha256` = '{card['sha256']}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise TrackingError(
            f"no MLflow run in experiment '{conf['experiment']}' has model sha256 "
            f"{card['sha256'][:12]}: run `python -m mlproject.pipeline.tracking log` first"
        )
    run_id = runs[0].info.run_id
    name = name or card["name"]
    # The client API: mlflow.register_model wants an MLflow-flavoured model, not an ONNX file.
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=f"ONNX model {card['name']} (mlproject)")
    result = client.create_model_version(
        name,
        f"{runs[0].info.artifact_uri}/{ARTIFACT_DIR}",
        run_id=run_id,
        tags={"version": version, "model.sha256": card["sha256"]},
    )
    print(f"mlflow: registered {name} version {result.version} ({version}, run {run_id})")
    return str(result.version)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser, add = subcommands("python -m mlproject.pipeline.tracking", __doc__)
    add("log", "log the pipeline's last run to MLflow")
    reg = add("register", "register the exported model as a version in MLflow")
    reg.add_argument("version")
    reg.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    done = log_run() if args.command == "log" else register(args.version, args.name)
    if done is None:
        print("mlflow: off (set MLFLOW_TRACKING_URI or tracking.mlflow: true)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
