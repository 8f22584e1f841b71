"""Training: the run layer every trainer shares (run, distributed, ema, rng, metrics; the
checkpoint format is model/store/checkpoint.py) and one module per trainer (lipsync, motion,
autoencoder, frames), each with its own explicit loop."""
