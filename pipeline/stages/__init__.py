"""The pipeline stages, one per module: clip -> crop -> coeffs -> audio -> shard (DESIGN.md
section 2), with the split and the chain that runs them in order."""
