"""fd2talk.cli: the five commands, one module each (thin: build a config, call one library
function). The top layer: it may import every package, and nothing imports it."""
