"""Monitoring: input summaries, the training reference profile, drift (NumPy/SciPy, no PyTorch)."""
