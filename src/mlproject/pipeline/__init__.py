"""The DVC stages (`python -m mlproject.pipeline <stage>`) and what only they use."""
