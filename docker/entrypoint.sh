#!/bin/sh
# Entrypoint of the fd2talk image: one image, five jobs.
#   prep ARGS...      -> fd2talk-prep ARGS...      (data pipeline)
#   train ARGS...     -> fd2talk-train ARGS...
#   generate ARGS...  -> fd2talk-generate ARGS...
#   eval ARGS...      -> fd2talk-eval ARGS...
#   app ARGS...       -> fd2talk-app ARGS...       (the web page)
#   PROGRAM ARGS...   -> PROGRAM ARGS... when PROGRAM is on PATH (fd2talk-prep, python, bash...)
#   anything else     -> fd2talk-prep ARGS...      (so `docker run IMAGE run /work ...` works)
set -eu

case "${1:-}" in
  prep) shift; exec fd2talk-prep "$@" ;;
  train) shift; exec fd2talk-train "$@" ;;
  generate) shift; exec fd2talk-generate "$@" ;;
  eval) shift; exec fd2talk-eval "$@" ;;
  app) shift; exec fd2talk-app "$@" ;;
  "") exec fd2talk-prep --help ;;
  -*) exec fd2talk-prep "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then
  exec "$@"
fi
exec fd2talk-prep "$@"
