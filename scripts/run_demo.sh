#!/usr/bin/env bash
# The README's main job: installs what it needs into ./.venv, then runs the HAL round trip.
source "$(dirname "$0")/_venv.sh" all
exec .venv/bin/krabby-hal-demo "$@"
