"""fd2talk.pipeline: raw talking videos -> 25 fps clips -> face crops -> coefficients and
audio features -> WebDataset shards (DESIGN.md section 2): the stages, the backends they call,
the runner that maps them over clips, and the sources of raw videos. It imports only
`fd2talk.core`."""
