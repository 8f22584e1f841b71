"""fd2talk: an open implementation of FD2Talk (talking heads with facial decoupled diffusion).

`fd2talk.pipeline` turns raw talking videos into WebDataset shards; `fd2talk.model`
trains the two diffusion stages on them and generates videos.
"""

__version__ = "0.1.0"
