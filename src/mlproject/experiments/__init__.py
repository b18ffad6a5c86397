"""Experiments at scale: grid sweeps through DVC's task queue (sweep) and Optuna searches whose
trials are DVC experiments (hpo). Both rank results by the quality gate's first metric."""
