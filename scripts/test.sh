#!/usr/bin/env bash
# The README's test command: installs what the tests need into ./.venv, then runs the whole suite.
source "$(dirname "$0")/_venv.sh" all,ray  # ray: krabby-eval --ray is tested on a real local instance
exec .venv/bin/python -m pytest -q "$@"
