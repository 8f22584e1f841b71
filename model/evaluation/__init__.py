"""Evaluation (`fd2talk-eval`): the metrics as math, the third-party networks that feed them,
scoring videos and the protocol on a test split."""
