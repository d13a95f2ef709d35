"""The upstream fixtures' reference loop for a student (../shared/fixtures/parkour/README.md), written once.

The fixtures are random-weight files written by the upstream training code, with the arrays its
play/deploy loops produced (``reference.npz``). tests/test_policy_fixtures.py holds every loader to
those arrays within 1e-5 on the CPU; bench/cuda_check.py replays the same loop on a GPU and prints
the error. Each step is ``policy_step.PolicyStep``, the inference loop's own, so both check the code
that runs on the robot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import obs_layout as L
from .policy_step import PolicyStep


def load_reference(fixtures: str | Path) -> dict[str, np.ndarray]:
    """Every array of ``fixtures/reference.npz``, read into memory (the file is closed)."""
    with np.load(Path(fixtures) / "reference.npz") as data:
        return {k: data[k] for k in data.files}


def replay_student(policy: Any, ref: dict[str, np.ndarray], use_estimator: bool) -> dict[str, np.ndarray]:
    """The fixture README's loop over ``ref["obs"]`` [N, T, 753] and ``ref["depth"]``, from a fresh GRU
    state: the depth encoder on every REFRESH_PERIOD_STEPS-th step on (depth, obs proprio), latent and
    yaw held between; every step obs[DELTA_YAWS] <- PREDICTED_YAW_SCALE * yaw, then the actor (with the
    estimator for the deploy variant). Returns [N, T, ...] arrays: actions, latent, yaw_raw, and
    obs_fed (what the actor saw, the estimate written in for the deploy variant)."""
    step = PolicyStep(policy)  # the live loop's step (inference.py), so this checks what runs
    step.reset()
    obs_all, depth_all = ref["obs"], ref["depth"]
    n_envs, n_steps = obs_all.shape[:2]
    out: dict[str, list[Any]] = {k: [] for k in ("actions", "latent", "yaw_raw", "obs_fed")}
    for t in range(n_steps):
        obs = obs_all[:, t].copy()
        if step.wants_depth(refresh=t % L.REFRESH_PERIOD_STEPS == 0):
            step.encode(depth_all[:, t], obs)
        out["actions"].append(step.act(obs, use_estimator=use_estimator))  # writes the predicted yaw into obs
        fed = obs.copy()
        if use_estimator:
            fed[:, L.PRIV_EXPLICIT] = policy.estimate(obs)
        out["latent"].append(step.latent)
        out["yaw_raw"].append(step.yaw_raw)
        out["obs_fed"].append(fed)
    if step.latent is None or step.latent.shape != (n_envs, L.ENCODER_DEPTH_LATENT.stop):
        raise ValueError(f"the depth encoder gave no [{n_envs}, {L.ENCODER_DEPTH_LATENT.stop}] latent")
    return {k: np.stack(v, axis=1) for k, v in out.items()}
