"""What every part shares: atomic file writes, lineage (git and DVC hashes), preprocessing."""
