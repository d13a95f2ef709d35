# Sourced by the README's commands: make ./.venv (Python 3.11 if present, >= 3.10 otherwise) and
# install Krabby with what the command needs. torch is pinned: an unpinned torch pulls GBs of CUDA.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${KRABBY_PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '?'); this command needs 3.11 or newer" \
       "(MuJoCo 4 has no wheels for 3.10). Install python3.11 or set KRABBY_PYTHON=/path/to/python3.11." \
       "The HAL, the robot runner and the observation code alone run on 3.10: pip install -e '.[robot,onnx]' (jetson/README.md)." >&2
  exit 2
fi
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
