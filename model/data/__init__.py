"""Training data: shards -> windows and frame items -> batches, normalisation statistics, and
the latent cache (its stage and its contract)."""
