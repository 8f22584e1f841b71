"""fd2talk.core: the base both packages stand on (the shard schema, errors and typed skips,
device choice, atomic writes, media I/O with ffmpeg, revisions and fingerprints). It imports
nothing else of fd2talk."""
