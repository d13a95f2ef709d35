"""Write checkpoints in the exact upstream format (OnPolicyRunnerWithExtractor.save, spec §5).

Used by the demo-policy trainer and by tests that need a checkpoint without the shared fixtures.
The result loads with ``load_policy`` and with the upstream runner (strict state_dict names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import networks
from .obs_layout import NUM_JOINTS, OBS_DIM


def make_critic() -> nn.Sequential:
    """ActorCriticRMA's critic: only trained upstream, but its weights are part of model_state_dict."""
    return nn.Sequential(
        nn.Linear(OBS_DIM, 512), nn.ELU(), nn.Linear(512, 256), nn.ELU(), nn.Linear(256, 128), nn.ELU(), nn.Linear(128, 1)
    )


def teacher_checkpoint(
    actor: networks.Actor,
    estimator: networks.DefaultEstimator,
    critic: nn.Module | None = None,
    *,
    iteration: int = 0,
    action_std: float = 1.0,
    infos: Any = None,
) -> dict[str, Any]:
    """The dict upstream torch.save()s for a teacher: model, estimator, optimizer, iter, infos."""
    critic = critic if critic is not None else make_critic()
    model = {"std": torch.full((NUM_JOINTS,), float(action_std))}
    model.update({f"actor.{k}": v.detach().clone() for k, v in actor.state_dict().items()})
    model.update({f"critic.{k}": v.detach().clone() for k, v in critic.state_dict().items()})
    params = list(model.values())
    optimizer = torch.optim.Adam([p.clone().requires_grad_() for p in params if p.is_floating_point()], lr=1e-3)
    return {
        "model_state_dict": model,
        "estimator_state_dict": {k: v.detach().clone() for k, v in estimator.state_dict().items()},
        "optimizer_state_dict": optimizer.state_dict(),
        "iter": int(iteration),
        "infos": infos,
    }


def random_teacher_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """A random-weight teacher checkpoint file (for tests and smoke runs; it does not walk)."""
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher_checkpoint(networks.Actor(), networks.DefaultEstimator()), path)
    return path
