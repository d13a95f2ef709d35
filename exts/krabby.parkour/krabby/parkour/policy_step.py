"""The policy's part of a control step, as training ran it, written once.

A teacher is one ``act``. A student runs its depth encoder on refresh steps (every
``obs_layout.REFRESH_PERIOD_STEPS`` control steps, and whenever nothing is held yet, e.g. after a
reset) and holds the latent and the raw yaw in between; every step obs[DELTA_YAWS] <- 1.5 * yaw
before the actor. The inference loop, krabby-replay and the upstream-fixture parity check all run
this class, so a replay re-runs what ran live and the parity test checks the live code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .observation import ObservationBuilder, apply_predicted_yaw, proprio_for_depth_encoder


class PolicyStep:
    """One policy's held state between steps: the student's depth latent and raw yaw (batch-first arrays)."""

    def __init__(self, policy: Any):
        self.policy = policy  # a ParkourPolicy
        self.latent: Any = None  # [N, 32], the student's last encoder output
        self.yaw_raw: Any = None  # [N, 2], before the x1.5

    def reset(self) -> None:
        """A new episode: the policy's recurrent state and what it held start over."""
        self.policy.reset()
        self.latent = self.yaw_raw = None

    def wants_depth(self, refresh: bool) -> bool:
        """Whether this step runs the depth encoder (then call ``encode`` before ``act``)."""
        return self.policy.kind == "student" and (refresh or self.latent is None)

    def encode(self, depth: Any, obs: Any) -> None:
        """Student: depth [N, 58, 87] and this step's obs [N, 753] (its proprio, yaw slots zeroed) -> held latent, yaw."""
        self.latent, self.yaw_raw = self.policy.encode_depth(depth, proprio_for_depth_encoder(obs))

    def act(self, obs: Any, *, use_estimator: bool) -> Any:
        """Actions [N, A] for obs [N, 753]; a student's ``obs`` gets the held predicted yaw, in place."""
        if self.policy.kind != "student":
            return self.policy.act(obs, use_estimator=use_estimator)
        apply_predicted_yaw(obs, np.asarray(self.yaw_raw))
        return self.policy.act(obs, use_estimator=use_estimator, depth_latent=self.latent)

    def from_builder(self, builder: ObservationBuilder, obs: np.ndarray, *, use_estimator: bool) -> np.ndarray:
        """One robot's step on ``obs`` [753] just built by ``builder`` (its refresh flag, its encoder image)."""
        batch = obs[None]  # a view: the predicted yaw lands in ``obs`` itself
        if self.wants_depth(builder.is_refresh_step):
            self.encode(builder.depth_for_encoder[None], batch)
        return self.act(batch, use_estimator=use_estimator)[0]
