"""The two runtimes of a loaded policy: Krabby's own torch nn.Modules, or onnxruntime sessions of an export.

``policy.ParkourPolicy`` wraps one of them; both take and return their native arrays
(torch tensors on a device, or numpy). torch / onnxruntime are imported when a backend is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .obs_layout import OBS_DIM, PRIV_EXPLICIT, PROPRIO
from .policy_formats import ACTION_DIM, GRU_HIDDEN_DIM, ONNX_MANIFEST, PolicyLoadError, PolicyWeights, first_line

# ----------------------------------------------------------------------------- backends


class TorchBackend:
    """Runs Krabby's own nn.Modules; arrays in and out are torch tensors on ``device``."""

    name = "torch"

    def __init__(self, weights: PolicyWeights, device: str, num_threads: int | None):
        import torch

        from . import networks

        self.torch = torch
        if num_threads is not None:
            torch.set_num_threads(num_threads)  # process-wide: only when the caller asked
        try:
            self.device = torch.device(device)
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise PolicyLoadError(f"device {device!r} is not usable by torch ({first_line(exc)})") from None
        self._on_cpu = self.device.type == "cpu"  # the per-call paths skip device moves there
        nets = networks.load_networks(weights)
        self.actor_hist = networks.ActorStep(nets.actor, hist_encoding=True).to(self.device).eval()
        self.actor_priv = networks.ActorStep(nets.actor, hist_encoding=False).to(self.device).eval()
        # the estimator is called directly: EstimatorStep is the ONNX export's wrapper
        self.estimator: Any = None if nets.estimator is None else nets.estimator.to(self.device)
        self.depth: Any = None
        if nets.depth_encoder is not None:
            self.depth = networks.DepthEncoderStep(nets.depth_encoder).to(self.device).eval()
        self._substitute = networks.substitute_priv_explicit

    def to_native(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            if x.dtype != np.float32 or not x.flags.c_contiguous:  # the loop's arrays already are
                x = np.ascontiguousarray(x, dtype=np.float32)
            t = self.torch.from_numpy(x)
            return t if self._on_cpu else t.to(self.device)
        return x.to(device=self.device, dtype=self.torch.float32)

    def to_numpy(self, y: Any) -> np.ndarray:
        return y.numpy() if self._on_cpu else y.cpu().numpy()

    def estimate(self, obs: Any) -> Any:
        with self.torch.inference_mode():
            return self.estimator(obs[:, PROPRIO])

    def act(self, obs: Any, use_estimator: bool, depth_latent: Any, hist_encoding: bool) -> Any:
        with self.torch.inference_mode():
            if use_estimator:
                obs = self._substitute(obs, self.estimator(obs[:, PROPRIO]))
            step = self.actor_hist if hist_encoding else self.actor_priv
            return step(obs, depth_latent)

    def zero_state(self, batch: int) -> Any:
        return self.torch.zeros(1, batch, GRU_HIDDEN_DIM, device=self.device)

    def depth_step(self, depth: Any, proprio: Any, h: Any) -> tuple[Any, Any, Any]:
        with self.torch.inference_mode():
            return self.depth(depth, proprio, h)


class OnnxBackend:
    """Runs the graphs of an ONNX export directory with onnxruntime; arrays are float32 numpy."""

    name = "onnx"

    def __init__(self, directory: Path, device: str, num_threads: int | None, manifest: dict[str, Any]):
        try:
            import onnxruntime as ort
        except ImportError:
            raise PolicyLoadError("backend='onnx' needs onnxruntime: pip install 'krabby[onnx]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1 if num_threads is None else num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if device == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise PolicyLoadError(f"device {device!r}: this onnxruntime build has no CUDAExecutionProvider")
            device_id = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            raise PolicyLoadError(f"device {device!r}: backend='onnx' supports 'cpu' and 'cuda[:N]'")
        graphs = manifest["graphs"]

        def session(role: str) -> Any:
            spec = graphs.get(role)
            if spec is None:
                return None
            file = directory / spec["file"]
            if not file.is_file():
                raise PolicyLoadError(f"{directory}: {ONNX_MANIFEST} names {spec['file']}, which is missing")
            try:
                sess = ort.InferenceSession(str(file), options, providers=providers)
            except Exception as exc:
                raise PolicyLoadError(f"{file}: onnxruntime cannot load it ({first_line(exc)})") from None
            names = [i.name for i in sess.get_inputs()]
            if names != spec["inputs"]:
                raise PolicyLoadError(f"{file}: graph inputs {names}, manifest says {spec['inputs']}")
            return sess

        self.actor_hist = session("actor")
        self.actor_priv = session("actor_priv_encoder")
        self.estimator = session("estimator")
        self.depth = session("depth_encoder")
        if self.actor_hist is None or self.actor_priv is None:
            raise PolicyLoadError(f"{directory}: {ONNX_MANIFEST} lists no actor graphs")
        obs_width = self.actor_hist.get_inputs()[0].shape[1]
        if obs_width != OBS_DIM:
            raise PolicyLoadError(
                f"{directory}: wrong obs dim: actor graph takes {obs_width} floats, expected {OBS_DIM}"
            )
        action_width = self.actor_hist.get_outputs()[0].shape[1]
        if action_width != ACTION_DIM:
            raise PolicyLoadError(
                f"{directory}: wrong action dim: actor graph outputs {action_width}, expected {ACTION_DIM}"
            )

    @staticmethod
    def to_native(x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            x = x.detach().cpu().numpy()
        return np.ascontiguousarray(x, dtype=np.float32)

    def estimate(self, obs: np.ndarray) -> np.ndarray:
        return self.estimator.run(None, {"proprio": np.ascontiguousarray(obs[:, PROPRIO])})[0]

    def act(self, obs: np.ndarray, use_estimator: bool, depth_latent: Any, hist_encoding: bool) -> np.ndarray:
        if use_estimator:
            est = self.estimate(obs)
            obs = obs.copy()
            obs[:, PRIV_EXPLICIT] = est
        feeds = {"obs": obs}
        if depth_latent is not None:
            feeds["depth_latent"] = depth_latent
        return (self.actor_hist if hist_encoding else self.actor_priv).run(None, feeds)[0]

    @staticmethod
    def zero_state(batch: int) -> np.ndarray:
        return np.zeros((1, batch, GRU_HIDDEN_DIM), dtype=np.float32)

    def depth_step(self, depth: np.ndarray, proprio: np.ndarray, h: np.ndarray) -> tuple[Any, Any, Any]:
        latent, yaw_raw, h_out = self.depth.run(None, {"depth": depth, "proprio": proprio, "h_in": h})
        return latent, yaw_raw, h_out
