"""`fd2talk-app`: the web page over the generation pipeline."""
