"""CI and operations steps: model registry, release, retraining, deployment, remotes, act."""
