"""Training: the shared machinery (distributed set-up, runs, EMA, checkpoints) and one module
per trainer (lipsync, motion, autoencoder, frames)."""
