"""fd2talk.model: the two diffusion stages (paper section 3): their networks, training data,
trainers, checkpoints and model folders, generation, evaluation, the web page and the demo.
It builds on `fd2talk.pipeline` (shards, the crop and coefficient stages) and `fd2talk.core`."""
