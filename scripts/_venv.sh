# Sourced by the README's commands: make ./.venv (Python 3.11 if present, >= 3.10 otherwise) and
# install Krabby with what the command needs. torch is pinned: an unpinned torch pulls GBs of CUDA.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${KRABBY_PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=.venv/.krabby-install-$(cat pyproject.toml setup.py | sha1sum | cut -c1-12)-${1:-all}
if [ ! -f "$stamp" ]; then
  echo "==> installing torch==2.13.0 and krabby[${1:-all}] into .venv (first run only; about 1 GB to download on a new machine)"
  .venv/bin/python -m pip install "torch==2.13.0" -e ".[${1:-all}]"  # not -q: pip shows each download's progress
  echo "==> installed"
  touch "$stamp"
fi
