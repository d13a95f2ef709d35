"""Load a parkour policy (teacher or student) from any upstream artifact and run it.

``load_policy`` accepts what Isaaclab_Parkour writes (spec §5, §6): a training checkpoint
``model_*.pt``, an ``exported_teacher/`` or ``exported_deploy/`` TorchScript directory, the run
directory holding exactly one of those, or an ONNX directory written by
``krabby.parkour.onnx_export``. It copies the weights into Krabby's own modules
(``krabby.parkour.networks``, strict), so the same code runs whatever the source, and refuses
anything else with a one-line ``PolicyLoadError``.

Runtime semantics, chosen explicitly (spec §4.4, §9):

- ``act`` always uses the history encoder unless ``hist_encoding=False`` is passed (upstream
  demo.py's priv_encoder path). It never writes into the caller's array.
- ``use_estimator`` has no default: the teacher expects the estimator (play.py), the exported
  teacher has none, the student was trained without it but its deploy export runs it. The caller
  must choose.
- The student's yaw: ``encode_depth`` returns the raw tanh yaw; the caller writes
  ``YAW_OBS_SCALE * yaw_raw`` (1.5×) into obs[:, 6:8] before ``act``, exactly as the exported
  deploy policy expects. ``act`` does not touch obs[:, 6:8].
- The depth encoder's GRU state starts at zero for the first ``encode_depth`` batch size and
  persists until ``reset()``. A call with a different batch size raises ``ValueError`` (upstream's
  TorchScript export also freezes the batch) rather than silently dropping the state.

This module imports only numpy at import time; torch is imported when a torch backend or a
conversion needs it, so ``load_policy(onnx_dir, backend="onnx")`` runs without torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .obs_layout import NUM_PROPRIO, OBS_DIM
from .policy_backends import OnnxBackend, TorchBackend
from .policy_formats import (
    ACTION_DIM,
    DEPTH_LATENT_DIM,
    DEPTH_SHAPE_HW,
    Backend,
    PolicyKind,
    PolicyLoadError,
    is_tensor,
    read_onnx_manifest,
    read_weights,
    resolve_artifact,
)

# ----------------------------------------------------------------------------- public API


class ParkourPolicy:
    """One loaded teacher or student policy; see the module docstring for the runtime semantics.

    Arrays may be numpy or torch; outputs have the type (and, for torch, the device) of the main input.
    """

    obs_dim: int = OBS_DIM
    action_dim: int = ACTION_DIM
    depth_latent_dim: int = DEPTH_LATENT_DIM
    depth_shape_hw: tuple[int, int] = DEPTH_SHAPE_HW

    def __init__(self, backend: TorchBackend | OnnxBackend, kind: PolicyKind, source: Path):
        self._impl = backend
        self.kind: PolicyKind = kind
        self.backend: Backend = backend.name  # type: ignore[assignment]
        self.source = source
        self._gru_state: Any = None
        self._gru_batch = 0

    @property
    def has_estimator(self) -> bool:
        """False for exported_teacher/ (upstream's teacher export leaves the estimator out)."""
        return self._impl.estimator is not None

    def __repr__(self) -> str:
        return (
            f"ParkourPolicy(kind={self.kind!r}, backend={self.backend!r}, estimator={self.has_estimator}, "
            f"source='{self.source}')"
        )

    def reset(self) -> None:
        """Zero all recurrent state (the depth encoder's GRU); the next encode_depth starts fresh."""
        self._gru_state = None
        self._gru_batch = 0

    def act(
        self,
        obs: Any,
        *,
        use_estimator: bool,
        depth_latent: Any = None,
        hist_encoding: bool = True,
    ) -> Any:
        """obs [N, 753] → action means [N, 12] (Isaac Lab joint order, before scale and clip).

        use_estimator: replace obs[:, 185:194] by estimator(obs[:, :53]) first (on a copy).
        depth_latent: student only, the held latent [N, 32] from the last ``encode_depth``.
        hist_encoding: False selects priv_encoder on obs[:, 194:223] (upstream demo.py).
        """
        if type(obs) is np.ndarray and obs.ndim == 2 and obs.shape[1] == OBS_DIM and obs.dtype.kind == "f":
            native = self._impl.to_native(obs)  # the control loop's case, checked inline (this runs every step)
        else:
            native = self._impl.to_native(self._check(obs, "obs", (OBS_DIM,)))
        n = native.shape[0]
        if self.kind == "student":
            if depth_latent is None:
                raise ValueError("student policy: act() needs depth_latent [N, 32] from encode_depth()")
            latent = self._impl.to_native(self._check(depth_latent, "depth_latent", (DEPTH_LATENT_DIM,), n))
        else:
            if depth_latent is not None:
                raise ValueError("teacher policy: depth_latent is for students; the teacher encodes obs[:, 53:185]")
            latent = None
        if use_estimator and self._impl.estimator is None:
            raise ValueError(
                f"{self.source} has no estimator (upstream's exported_teacher/policy.pt leaves it out): call "
                "act(..., use_estimator=False) with priv_explicit already in obs[:, 185:194], or load the model_*.pt"
            )
        actions = self._impl.act(native, use_estimator, latent, hist_encoding)
        return self._like(actions, obs)

    def estimate(self, obs: Any) -> Any:
        """obs [N, 753] → estimator(obs[:, :53]) [N, 9], the priv_explicit that use_estimator writes."""
        if self._impl.estimator is None:
            raise ValueError(f"{self.source} has no estimator")
        native = self._impl.to_native(self._check(obs, "obs", (OBS_DIM,)))
        return self._like(self._impl.estimate(native), obs)

    def encode_depth(self, depth: Any, proprio: Any) -> tuple[Any, Any]:
        """One depth-encoder step: depth [N, 58, 87] (processed, in [-0.5, 0.5]), proprio obs[:, :53]
        → (latent [N, 32], yaw_raw [N, 2]). Zeroes proprio[:, 6:8] internally; advances the GRU.

        Call it on the steps where upstream runs the encoder (every 5th) and hold its outputs between.
        """
        if self.kind != "student":
            raise ValueError("encode_depth() needs a student policy; this is a teacher")
        if isinstance(depth, np.ndarray) or is_tensor(depth):
            if tuple(depth.shape[1:]) == DEPTH_SHAPE_HW[::-1]:
                raise ValueError(
                    f"depth has shape {list(depth.shape)}: rows and columns are swapped; expected [N, 58, 87]"
                )
        depth_native = self._impl.to_native(self._check(depth, "depth", DEPTH_SHAPE_HW))
        n = depth_native.shape[0]
        proprio_native = self._impl.to_native(self._check(proprio, "proprio", (NUM_PROPRIO,), n))
        if self._gru_state is None:
            self._gru_state, self._gru_batch = self._impl.zero_state(n), n
        elif n != self._gru_batch:
            raise ValueError(
                f"encode_depth: the GRU state holds batch {self._gru_batch}, got batch {n}; call reset() first"
            )
        latent, yaw_raw, self._gru_state = self._impl.depth_step(depth_native, proprio_native, self._gru_state)
        return self._like(latent, depth), self._like(yaw_raw, depth)

    @staticmethod
    def _check(x: Any, name: str, tail: tuple[int, ...], batch: int | None = None) -> Any:
        if not (isinstance(x, np.ndarray) or is_tensor(x)):
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
        shape = tuple(x.shape)
        if len(shape) != 1 + len(tail) or shape[1:] != tail:
            want = ", ".join(map(str, tail))
            raise ValueError(f"{name} must have shape [N, {want}], got {list(shape)}")
        if batch is not None and shape[0] != batch:
            raise ValueError(f"{name} has batch {shape[0]}, expected {batch} (same as the other input)")
        dtype_ok = x.dtype.kind == "f" if isinstance(x, np.ndarray) else x.dtype.is_floating_point
        if not dtype_ok:
            raise TypeError(f"{name} must be floating point (float32), got {x.dtype}")
        return x

    def _like(self, y: Any, reference: Any) -> Any:
        """Return ``y`` as the same array type as ``reference`` (numpy, or torch on its device)."""
        if isinstance(reference, np.ndarray):
            return y if isinstance(y, np.ndarray) else self._impl.to_numpy(y)
        import torch

        if isinstance(y, np.ndarray):
            y = torch.from_numpy(y)
        elif y.is_inference():
            y = y.clone()  # inference tensors cannot be modified in place later; callers may want to
        return y.to(reference.device)


def load_policy(
    path: str | Path,
    device: str = "cpu",
    backend: Backend = "torch",
    *,
    num_threads: int | None = None,
) -> ParkourPolicy:
    """Load a teacher or student policy from a checkpoint, an upstream export directory or an ONNX export.

    backend="torch" runs Krabby's nn.Modules; backend="onnx" runs onnxruntime. Given a checkpoint or
    TorchScript directory with backend="onnx", the graphs are exported to a temporary directory,
    loaded into memory and the directory is deleted (use ``krabby-export-onnx`` to keep them).
    num_threads: torch → torch.set_num_threads (process-wide, only if given); onnx → intra-op
    threads (default 1).
    """
    path = Path(path)
    if backend not in ("torch", "onnx"):
        raise PolicyLoadError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    resolved = resolve_artifact(path)
    if backend == "torch":
        if resolved.fmt == "onnx":
            raise PolicyLoadError(f"{resolved.path}: an ONNX export; load it with backend='onnx'")
        weights = read_weights(resolved.path)
        return ParkourPolicy(TorchBackend(weights, device, num_threads), weights.kind, weights.source)
    if resolved.fmt == "onnx":
        manifest = read_onnx_manifest(resolved.path)
        impl = OnnxBackend(resolved.path, device, num_threads, manifest)
        return ParkourPolicy(impl, manifest["kind"], resolved.path)
    from .onnx_export import export_onnx

    weights = read_weights(resolved.path)
    with tempfile.TemporaryDirectory(prefix="krabby-onnx-") as tmp:
        export_onnx(weights, tmp)
        manifest = read_onnx_manifest(Path(tmp))
        impl = OnnxBackend(Path(tmp), device, num_threads, manifest)  # sessions hold the graphs in memory
    return ParkourPolicy(impl, weights.kind, weights.source)


__all__ = ["ParkourPolicy", "PolicyLoadError", "load_policy"]
