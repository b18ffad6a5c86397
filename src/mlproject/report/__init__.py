"""The pull-request report and quality gate.

Reads what the pipeline wrote (metric JSON, plot data, the ONNX model and its card) at the base
revision and in the workspace, and never imports the training side:

    collect  (diff.py)   git + `dvc metrics/params diff --json` -> one report dict (report.json)
    gate     (gate.py)   floors, ceilings and max regression -> verdict
    plots    (plots.py)  base | head PNGs rendered offline with matplotlib
    model    (model.py)  ONNX size and onnxruntime latency, base -> head
    render   (render.py) report dict -> markdown (pure; the PR comment and the job summary)
    ci       (ci.py)     the CI steps: reproduce, post with CML, write the job summary

`python -m mlproject.report --help` lists the commands; `make report` and `make gate` call them.
"""

from ..core.paths import PR_REPORTS

REPORT_DIR = PR_REPORTS.as_posix()
