#!/usr/bin/env bash
# One-command setup + run.   bash tools/quickstart.sh train   # MPC on the synthetic set; ends with the report's path
#                            bash tools/quickstart.sh test    # the test suite (pytest)
#                            bash tools/quickstart.sh lint    # ruff check + ruff format --check (pyproject.toml [tool.ruff])
# Creates .venv (or uses $SPML_PYTHON / an active virtualenv) and installs spml with its test extras
# (dev, pretrained, dicom: the tests decode and encode compressed DICOMs; xrv: the torchxrayvision backbones).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${SPML_PYTHON:-}" ]; then
  PY="$SPML_PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
fi

prefix="$("$PY" -c 'import sys; print(sys.prefix)')"
stamp="$prefix/.spml-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing spml and its dependencies into $prefix"
  # PyPI's x86_64 torch is a CUDA build: the environment grows by about 6.5 GB. Say so before pip's ENOSPC does.
  free_gb="$(df -Pk "$prefix" | awk 'NR == 2 {print int($4 / 1048576)}')"
  if [ "${free_gb:-0}" -lt 8 ]; then
    echo "warning: ${free_gb} GB free under $prefix; installing torch and its CUDA libraries needs about 7 GB" >&2
  fi
  "$PY" -m pip install -q --upgrade pip
  # torch/torchvision first (timm brings torchvision), pinned to a pair that imports together.
  "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$PY" -m pip install -q -e ".[dev,pretrained,dicom,xrv]"
  echo "$want" > "$stamp"
fi

case "${1:-}" in
  train)
    shift
    # a rerun starts over; the run evaluates itself (eval/ and eval-tta/) and ends with "report: <path>"
    "$PY" tools/train.py --mode spml --config configs/quickstart.yaml --overwrite "$@"
    ;;
  test)
    shift
    "$PY" -m pytest tests "$@"
    ;;
  lint)
    shift
    "$PY" -m ruff check . "$@"
    "$PY" -m ruff format --check .
    ;;
  *)
    echo "usage: bash tools/quickstart.sh train|test|lint [extra args]" >&2
    exit 2
    ;;
esac
