"""The shipped real-face model: its recipe (both stages on ../shared/corpus) and its check on the dev identities no training step sees."""
