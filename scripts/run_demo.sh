#!/usr/bin/env bash
# The README's main job: installs what it needs into ./.venv, then runs the MuJoCo sim-to-sim loop
# (HAL server + inference client + the bundled policy) for 20 s and writes a run folder
# runs/<date>-<time>-<terrain>/ (summary, Foxglove-readable log, video, plots, command, config);
# runs/latest points at it. Extra flags go to krabby-hal-server-mujoco (try --terrain hurdles).
source "$(dirname "$0")/_venv.sh" all
exec .venv/bin/krabby-hal-server-mujoco --terrain flat --duration 20 --runs runs --plots "$@"
