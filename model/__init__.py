"""fd2talk.model: the shard schema, the two diffusion stages, training and generation."""
