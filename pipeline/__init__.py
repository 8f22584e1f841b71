"""fd2talk.pipeline: raw talking videos -> 25 fps clips -> face crops -> coefficients and
audio features -> WebDataset shards (DESIGN.md section 2). One stage per module."""
