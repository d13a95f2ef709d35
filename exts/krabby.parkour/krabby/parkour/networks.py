"""The parkour policy networks, written to match upstream state_dict names exactly.

These mirror CAI23sbP/Isaaclab_Parkour's ``Actor``, ``StateHistoryEncoder``, ``DefaultEstimator``,
``DepthOnlyFCBackbone58x87`` and ``RecurrentDepthBackbone`` (spec §4) layer for layer, so a
checkpoint's tensors load with ``strict=True`` and the same torch ops run in the same order (the
fixtures reproduce to ~1e-7). Two deliberate differences from upstream:

- the depth encoder's GRU state is an explicit input/output (``h`` in, ``h`` out) instead of a
  hidden module attribute, so the module is pure and exports to ONNX with its state;
- ``DepthEncoderStep``, ``ActorStep`` and ``EstimatorStep`` are small pure wrappers holding the
  runtime conventions (which obs slices feed what, zeroing of the yaw slots, hist_encoding) so the
  torch backend and the ONNX graphs compute the same function.

Importing this module imports torch; ``krabby.parkour`` itself does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .obs_layout import (
    ENCODER_DEPTH_LATENT,
    ENCODER_YAW,
    HISTORY,
    HISTORY_LENGTH,
    NUM_JOINTS,
    NUM_PRIV_EXPLICIT,
    NUM_PRIV_LATENT,
    NUM_PROPRIO,
    NUM_SCAN,
    PRIV_EXPLICIT,
    PRIV_LATENT,
    PROPRIO,
    SCAN,
)
from .obs_layout import DELTA_YAWS as YAW_SLICE

# Network-internal widths (spec §4); the observation's own layout lives in obs_layout.
ACTION_DIM = NUM_JOINTS
"""Joint position action means, Isaac Lab joint order."""
SCAN_LATENT_DIM = 32
"""Output of scan_encoder; the student's depth latent replaces it."""
PRIV_LATENT_OUT_DIM = 20
"""Output of both priv_encoder and history_encoder."""
BACKBONE_IN_DIM = NUM_PROPRIO + SCAN_LATENT_DIM + NUM_PRIV_EXPLICIT + PRIV_LATENT_OUT_DIM
"""114."""
DEPTH_FEATURE_DIM = 32
"""Output of the image backbone (after its final ELU)."""
GRU_HIDDEN_DIM = 512
DEPTH_LATENT_DIM = ENCODER_DEPTH_LATENT.stop - ENCODER_DEPTH_LATENT.start
"""out[0:32] of the depth encoder: the student's scandots_latent."""
YAW_DIM = ENCODER_YAW.stop - ENCODER_YAW.start
"""out[32:34] of the depth encoder: raw (tanh) yaw, scaled by 1.5 before it goes into obs[:, 6:8]."""


class StateHistoryEncoder(nn.Module):
    """Per-step Linear then two temporal Conv1d over the 10-step proprio history (spec §4.1)."""

    def __init__(
        self, num_prop: int = NUM_PROPRIO, tsteps: int = HISTORY_LENGTH, output_size: int = PRIV_LATENT_OUT_DIM
    ):
        super().__init__()
        if tsteps != 10:
            raise ValueError(f"upstream's conv stack is sized for tsteps=10, got {tsteps}")
        self.tsteps = tsteps
        channel_size = 10
        self.encoder = nn.Sequential(nn.Linear(num_prop, 3 * channel_size), nn.ELU())
        self.conv_layers = nn.Sequential(
            nn.Conv1d(3 * channel_size, 2 * channel_size, kernel_size=4, stride=2),
            nn.ELU(),
            nn.Conv1d(2 * channel_size, channel_size, kernel_size=2, stride=1),
            nn.ELU(),
            nn.Flatten(),
        )
        self.linear_output = nn.Sequential(nn.Linear(channel_size * 3, output_size), nn.ELU())

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """history [N, 10, 53] (oldest first) → latent [N, 20]."""
        n = history.shape[0]
        projection = self.encoder(history.reshape(n * self.tsteps, -1))
        # channels = features, length = time (oldest first), as upstream
        output = self.conv_layers(projection.reshape(n, self.tsteps, -1).permute(0, 2, 1))
        return self.linear_output(output)


class Actor(nn.Module):
    """The policy network: the teacher's ``actor.*`` and the student's ``depth_actor`` (spec §4.1).

    Submodule registration order follows upstream so ``state_dict()`` lists keys in the same order.
    """

    def __init__(self, num_actions: int = ACTION_DIM):
        super().__init__()
        self.priv_encoder = nn.Sequential(
            nn.Linear(NUM_PRIV_LATENT, 64), nn.ELU(), nn.Linear(64, PRIV_LATENT_OUT_DIM), nn.ELU()
        )
        self.history_encoder = StateHistoryEncoder()
        self.scan_encoder = nn.Sequential(
            nn.Linear(NUM_SCAN, 128), nn.ELU(), nn.Linear(128, 64), nn.ELU(), nn.Linear(64, SCAN_LATENT_DIM), nn.Tanh()
        )
        self.actor_backbone = nn.Sequential(
            nn.Linear(BACKBONE_IN_DIM, 512),
            nn.ELU(),
            nn.Linear(512, 256),
            nn.ELU(),
            nn.Linear(256, 128),
            nn.ELU(),
            nn.Linear(128, num_actions),
        )

    def forward(
        self, obs: torch.Tensor, hist_encoding: bool, scandots_latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """obs [N, 753] → action means [N, 12]; ``scandots_latent`` [N, 32] replaces the scan encoder."""
        if scandots_latent is None:
            scan_latent = self.scan_encoder(obs[:, SCAN])
        else:
            scan_latent = scandots_latent
        obs_prop_scan = torch.cat([obs[:, PROPRIO], scan_latent], dim=1)
        obs_priv_explicit = obs[:, PRIV_EXPLICIT]
        if hist_encoding:
            latent = self.history_encoder(obs[:, HISTORY].reshape(-1, HISTORY_LENGTH, NUM_PROPRIO))
        else:
            latent = self.priv_encoder(obs[:, PRIV_LATENT])
        return self.actor_backbone(torch.cat([obs_prop_scan, obs_priv_explicit, latent], dim=1))


class DefaultEstimator(nn.Module):
    """proprio [N, 53] → estimated priv_explicit [N, 9] (spec §4.2); keys ``estimator.{0,2,4}.*``."""

    def __init__(self, input_dim: int = NUM_PROPRIO, output_dim: int = NUM_PRIV_EXPLICIT):
        super().__init__()
        self.estimator = nn.Sequential(
            nn.Linear(input_dim, 128), nn.ELU(), nn.Linear(128, 64), nn.ELU(), nn.Linear(64, output_dim)
        )

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.estimator(proprio)


class DepthOnlyFCBackbone58x87(nn.Module):
    """Depth image [N, 58, 87] → feature [N, 32]; ends in ELU because upstream passes 512 as the
    output_activation argument, which is not "tanh" (spec §4.3, §9.10)."""

    def __init__(self, output_dim: int = DEPTH_FEATURE_DIM):
        super().__init__()
        self.image_compression = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5),  # [N, 32, 54, 83]
            nn.MaxPool2d(kernel_size=2, stride=2),  # [N, 32, 27, 41]
            nn.ELU(),
            nn.Conv2d(32, 64, kernel_size=3),  # [N, 64, 25, 39]
            nn.ELU(),
            nn.Flatten(),  # 62400, C-H-W order
            nn.Linear(64 * 25 * 39, 128),
            nn.ELU(),
            nn.Linear(128, output_dim),
        )
        self.output_activation = nn.ELU()

    def forward(self, depth_image: torch.Tensor) -> torch.Tensor:
        return self.output_activation(self.image_compression(depth_image.unsqueeze(1)))


class RecurrentDepthBackbone(nn.Module):
    """Image feature + proprio → GRU (one step) → [latent 32 | yaw 2] (spec §4.3).

    Unlike upstream the GRU state is explicit: ``forward(depth, proprio, h) -> (out, h_next)`` with
    h [1, N, 512]. Upstream's stateful behaviour lives in ``ParkourPolicy``.
    """

    def __init__(self):
        super().__init__()
        self.base_backbone = DepthOnlyFCBackbone58x87()
        self.combination_mlp = nn.Sequential(
            nn.Linear(DEPTH_FEATURE_DIM + NUM_PROPRIO, 128), nn.ELU(), nn.Linear(128, 32)
        )
        self.rnn = nn.GRU(input_size=32, hidden_size=GRU_HIDDEN_DIM, batch_first=True)
        self.output_mlp = nn.Sequential(nn.Linear(GRU_HIDDEN_DIM, DEPTH_LATENT_DIM + YAW_DIM), nn.Tanh())

    def forward(
        self, depth_image: torch.Tensor, proprio: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """depth [N, 58, 87], proprio [N, 53] (6:8 already zeroed), h [1, N, 512] → ([N, 34], h')."""
        feature = self.base_backbone(depth_image)
        gru_in = self.combination_mlp(torch.cat([feature, proprio], dim=-1))
        gru_out, h_next = self.rnn(gru_in.unsqueeze(1), h)
        return self.output_mlp(gru_out.squeeze(1)), h_next


def zero_yaw(proprio: torch.Tensor) -> torch.Tensor:
    """Copy of proprio [N, 53] with delta_yaw slots 6:8 set to zero, as upstream feeds the encoder.

    Built with cat (not in-place) so callers' tensors are untouched and the op exports to ONNX.
    """
    zeros = torch.zeros_like(proprio[:, YAW_SLICE])
    return torch.cat([proprio[:, : YAW_SLICE.start], zeros, proprio[:, YAW_SLICE.stop :]], dim=1)


def substitute_priv_explicit(obs: torch.Tensor, priv_explicit: torch.Tensor) -> torch.Tensor:
    """Copy of obs with obs[:, 185:194] ← priv_explicit (what upstream play.py writes in place)."""
    return torch.cat([obs[:, : PRIV_EXPLICIT.start], priv_explicit, obs[:, PRIV_EXPLICIT.stop :]], dim=1)


class ActorStep(nn.Module):
    """Pure actor call with a fixed encoder path: obs [N,753] (+ depth_latent [N,32]) → actions [N,12].

    ``hist_encoding`` is a constructor constant so each path is its own ONNX graph.
    """

    def __init__(self, actor: Actor, hist_encoding: bool = True):
        super().__init__()
        self.actor = actor
        self.hist_encoding = hist_encoding

    def forward(self, obs: torch.Tensor, depth_latent: torch.Tensor | None = None) -> torch.Tensor:
        return self.actor(obs, self.hist_encoding, depth_latent)


class EstimatorStep(nn.Module):
    """proprio [N, 53] → priv_explicit estimate [N, 9]."""

    def __init__(self, estimator: DefaultEstimator):
        super().__init__()
        self.estimator = estimator

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.estimator(proprio)


class DepthEncoderStep(nn.Module):
    """One depth-encoder step with the runtime conventions baked in.

    depth [N, 58, 87], raw proprio obs[:, :53] (6:8 zeroed here), h_in [1, N, 512]
    → latent [N, 32], yaw_raw [N, 2] (before ×1.5), h_out [1, N, 512].
    """

    def __init__(self, depth_encoder: RecurrentDepthBackbone):
        super().__init__()
        self.depth_encoder = depth_encoder

    def forward(
        self, depth: torch.Tensor, proprio: torch.Tensor, h_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, h_out = self.depth_encoder(depth, zero_yaw(proprio), h_in)
        return out[:, ENCODER_DEPTH_LATENT], out[:, ENCODER_YAW], h_out


@dataclass
class LoadedNetworks:
    """One policy's modules with its weights in, eval mode; ``None`` where the policy has no such part."""

    actor: Actor
    estimator: DefaultEstimator | None
    depth_encoder: RecurrentDepthBackbone | None


def load_networks(weights: Any) -> LoadedNetworks:
    """The modules for ``weights`` (a ``policy_formats.PolicyWeights``), loaded with ``strict=True``, in eval
    mode: the torch backend, the ONNX exporter and bench/policy_inference.py build theirs here."""
    actor = Actor()
    actor.load_state_dict(weights.actor, strict=True)
    estimator = depth_encoder = None
    if weights.estimator is not None:
        estimator = DefaultEstimator()
        estimator.load_state_dict(weights.estimator, strict=True)
        estimator.eval()
    if weights.depth_encoder is not None:
        depth_encoder = RecurrentDepthBackbone()
        depth_encoder.load_state_dict(weights.depth_encoder, strict=True)
        depth_encoder.eval()
    return LoadedNetworks(actor.eval(), estimator, depth_encoder)
