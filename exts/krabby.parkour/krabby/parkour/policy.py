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

import json
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .obs_layout import DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX, NUM_JOINTS, NUM_PROPRIO, OBS_DIM, PRIV_EXPLICIT, PROPRIO
from .obs_layout import PREDICTED_YAW_SCALE as YAW_OBS_SCALE

PolicyKind = Literal["teacher", "student"]
Backend = Literal["torch", "onnx"]

# Network widths repeated from networks.py so this module does not import torch; a test checks they agree.
ACTION_DIM = NUM_JOINTS
DEPTH_LATENT_DIM = 32
GRU_HIDDEN_DIM = 512
DEPTH_SHAPE_HW = (DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX)

ONNX_MANIFEST = "manifest.json"
ONNX_FORMAT = "krabby.parkour.onnx"
ONNX_FORMAT_VERSION = 1


class PolicyLoadError(ValueError):
    """A file or directory that is not a usable parkour policy; the message is one line saying why."""


# ----------------------------------------------------------------------------- weight sources


@dataclass
class PolicyWeights:
    """State dicts of one policy, keyed exactly as Krabby's modules expect (no outer prefix)."""

    kind: PolicyKind
    actor: dict[str, Any]
    estimator: dict[str, Any] | None
    depth_encoder: dict[str, Any] | None
    source: Path
    source_format: Literal["checkpoint", "torchscript"]
    source_files: list[Path] = field(default_factory=list)


@dataclass
class _Resolved:
    """What a user-given path turned out to be."""

    fmt: Literal["checkpoint", "torchscript", "onnx"]
    path: Path  # the checkpoint file, or the export directory


def _resolve(path: Path) -> _Resolved:
    """Classify ``path``; a directory holding exactly one policy artifact resolves to it."""
    if not path.exists():
        raise PolicyLoadError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix == ".onnx":
            raise PolicyLoadError(
                f"{path}: a single ONNX file; pass the directory written by krabby-export-onnx (it has {ONNX_MANIFEST})"
            )
        if _is_torchscript(path):
            if path.name in ("policy.pt", "depth_latest.pt"):
                return _Resolved("torchscript", path.parent)
            raise PolicyLoadError(
                f"{path}: a TorchScript file not named policy.pt/depth_latest.pt; pass its exported_teacher/ or "
                "exported_deploy/ directory"
            )
        return _Resolved("checkpoint", path)
    if not path.is_dir():
        raise PolicyLoadError(f"{path}: neither a regular file nor a directory")
    kind = _classify_dir(path)
    if kind is not None:
        return _Resolved(kind, path)
    candidates = sorted(
        [p for p in path.iterdir() if p.is_dir() and _classify_dir(p) is not None]
        + [p for p in path.glob("model_*.pt") if p.is_file()]
    )
    if len(candidates) == 1:
        return _resolve(candidates[0])
    if not candidates:
        raise PolicyLoadError(
            f"{path}: no policy here (expected a model_*.pt checkpoint, an exported_teacher/ or exported_deploy/ "
            f"directory with policy.pt, or an ONNX export with {ONNX_MANIFEST})"
        )
    names = ", ".join(p.name for p in candidates[:6]) + (", ..." if len(candidates) > 6 else "")
    raise PolicyLoadError(f"{path}: ambiguous, it holds {len(candidates)} policies ({names}); pass one of them")


def _classify_dir(path: Path) -> Literal["torchscript", "onnx"] | None:
    if (path / ONNX_MANIFEST).is_file():
        return "onnx"
    if (path / "policy.pt").is_file() or (path / "depth_latest.pt").is_file():
        return "torchscript"
    return None


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a code/ folder; torch.save zips have none."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in name for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_weights(path: str | Path) -> PolicyWeights:
    """Read and validate the state dicts of a checkpoint or TorchScript export directory.

    Raises ``PolicyLoadError`` for anything that would not load strictly into Krabby's modules.
    """
    resolved = _resolve(Path(path))
    if resolved.fmt == "onnx":
        raise PolicyLoadError(f"{resolved.path}: an ONNX export; load it with backend='onnx'")
    if resolved.fmt == "checkpoint":
        weights = _read_checkpoint(resolved.path)
    else:
        weights = _read_torchscript_dir(resolved.path)
    _validate(weights)
    return weights


def _read_checkpoint(path: Path) -> PolicyWeights:
    import torch

    try:
        # Upstream writes a plain pickled dict (spec §5) and reads it with weights_only=False; like any
        # torch checkpoint, only load files you trust.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for non-checkpoints
        raise PolicyLoadError(f"{path}: not a torch checkpoint ({_first_line(exc)})") from None
    if not isinstance(ckpt, dict):
        raise PolicyLoadError(
            f"{path}: not a training checkpoint: it holds a {type(ckpt).__name__}, expected the dict that "
            "OnPolicyRunnerWithExtractor.save writes (model_state_dict, estimator_state_dict, ...)"
        )
    missing = [k for k in ("model_state_dict", "estimator_state_dict") if k not in ckpt]
    if missing:
        present = ", ".join(map(str, list(ckpt)[:5]))
        raise PolicyLoadError(f"{path}: missing key(s) {', '.join(missing)} (has: {present or 'nothing'})")
    has_enc, has_actor = "depth_encoder_state_dict" in ckpt, "depth_actor_state_dict" in ckpt
    if has_enc != has_actor:
        have, lack = ("depth_encoder_state_dict", "depth_actor_state_dict")[:: 1 if has_enc else -1]
        raise PolicyLoadError(f"{path}: student checkpoint has {have} but is missing {lack}")
    for key in ("model_state_dict", "estimator_state_dict", "depth_encoder_state_dict", "depth_actor_state_dict"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise PolicyLoadError(f"{path}: {key} is a {type(ckpt[key]).__name__}, expected a state dict")
    model_sd = ckpt["model_state_dict"]
    critic_w = model_sd.get("critic.0.weight")
    if _is_tensor(critic_w) and critic_w.ndim == 2 and critic_w.shape[1] != OBS_DIM:
        raise PolicyLoadError(
            f"{path}: wrong obs dim: model_state_dict['critic.0.weight'] has shape {_shape(critic_w)}, "
            f"so the checkpoint was trained on {critic_w.shape[1]}-float observations; expected {OBS_DIM}"
        )
    if has_actor:
        return PolicyWeights(
            kind="student",
            actor=dict(ckpt["depth_actor_state_dict"]),
            estimator=dict(ckpt["estimator_state_dict"]),
            depth_encoder=dict(ckpt["depth_encoder_state_dict"]),
            source=path,
            source_format="checkpoint",
            source_files=[path],
        )
    actor = {k[len("actor.") :]: v for k, v in model_sd.items() if k.startswith("actor.")}
    if not actor:
        sample = ", ".join(list(model_sd)[:4])
        raise PolicyLoadError(
            f"{path}: model_state_dict has no actor.* keys (has: {sample}); not an Isaaclab_Parkour ActorCriticRMA"
        )
    return PolicyWeights(
        kind="teacher",
        actor=actor,
        estimator=dict(ckpt["estimator_state_dict"]),
        depth_encoder=None,
        source=path,
        source_format="checkpoint",
        source_files=[path],
    )


def _read_torchscript_dir(directory: Path) -> PolicyWeights:
    import torch

    policy_file, depth_file = directory / "policy.pt", directory / "depth_latest.pt"
    if not policy_file.is_file():
        raise PolicyLoadError(f"{directory}: has depth_latest.pt but no policy.pt (an exported_deploy/ needs both)")
    policy = _jit_load(policy_file)
    n_inputs = len(policy.forward.schema.arguments) - 1
    sd = policy.state_dict()
    actor = {k[len("actor.") :]: v for k, v in sd.items() if k.startswith("actor.")}
    estimator = {k[len("estimator.") :]: v for k, v in sd.items() if k.startswith("estimator.")} or None
    other = [k for k in sd if not k.startswith(("actor.", "estimator."))]
    if other:
        raise PolicyLoadError(
            f"{policy_file}: unexpected tensors {', '.join(other[:3])} (an observation normalizer or another "
            "network); Isaaclab_Parkour exports have only actor.* and estimator.*"
        )
    for attr, expected in (("_num_prop", NUM_PROPRIO), ("_start", PRIV_EXPLICIT.start), ("_end", PRIV_EXPLICIT.stop)):
        got = getattr(policy, attr, expected)
        if got != expected:
            raise PolicyLoadError(
                f"{policy_file}: wrong obs dim: the export writes the estimator using {attr}={got}, expected {expected}"
            )
    if not depth_file.is_file():
        if n_inputs != 1:
            raise PolicyLoadError(
                f"{policy_file}: a student policy (forward takes {n_inputs} inputs) without depth_latest.pt beside it"
            )
        return PolicyWeights("teacher", actor, estimator, None, directory, "torchscript", [policy_file])
    if n_inputs != 2:
        raise PolicyLoadError(
            f"{policy_file}: forward takes {n_inputs} input(s) but depth_latest.pt is beside it; an exported_deploy "
            "policy takes (obs, scandots_latent)"
        )
    depth_sd = _jit_load(depth_file).state_dict()
    depth_encoder = {k[len("depth_encoder.") :]: v for k, v in depth_sd.items() if k.startswith("depth_encoder.")}
    if len(depth_encoder) != len(depth_sd):
        stray = [k for k in depth_sd if not k.startswith("depth_encoder.")][:3]
        raise PolicyLoadError(f"{depth_file}: unexpected tensors {', '.join(stray)}; expected only depth_encoder.*")
    files = [policy_file, depth_file]
    return PolicyWeights("student", actor, estimator, depth_encoder, directory, "torchscript", files)


def _jit_load(path: Path) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates jit.load, but upstream's exports are TorchScript; we only read the weights.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise PolicyLoadError(f"{path}: not a TorchScript module ({_first_line(exc)})") from None


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _shape(value: Any) -> list[int]:
    return list(value.shape)


# What a wrong size at (part, state-dict key, dim) means, so refusals say "obs dim" or "action dim":
# (problem, what the number counts, how the expected number is made up).
_OBS = "wrong obs dim"
_DIM_MEANING: dict[tuple[str, str, int], tuple[str, str, str]] = {
    ("actor", "actor_backbone.6.weight", 0): ("wrong action dim", "actions", ""),
    ("actor", "actor_backbone.6.bias", 0): ("wrong action dim", "actions", ""),
    ("actor", "actor_backbone.0.weight", 1): (
        _OBS,
        "backbone inputs",
        " = 53 proprio + 32 scan latent + 9 priv_explicit + 20 history latent of the 753-float obs",
    ),
    ("actor", "scan_encoder.0.weight", 1): (_OBS, "height-scan samples", " (obs[53:185])"),
    ("actor", "priv_encoder.0.weight", 1): (_OBS, "priv_latent terms", " (obs[194:223])"),
    ("actor", "history_encoder.encoder.0.weight", 1): (_OBS, "proprio terms per history step", ""),
    ("estimator", "estimator.0.weight", 1): (_OBS, "proprio terms", " (obs[0:53])"),
    ("estimator", "estimator.4.weight", 0): (_OBS, "priv_explicit terms", " (obs[185:194])"),
    ("estimator", "estimator.4.bias", 0): (_OBS, "priv_explicit terms", " (obs[185:194])"),
    ("depth_encoder", "combination_mlp.0.weight", 1): (_OBS, "inputs", " = 32 image features + 53 proprio"),
    ("depth_encoder", "base_backbone.image_compression.6.weight", 1): (
        "wrong depth image size",
        "image features",
        " = 64·25·39 for a 58×87 image",
    ),
    ("depth_encoder", "output_mlp.0.weight", 0): ("wrong depth output dim", "outputs", " = 32 latent + 2 yaw"),
    ("depth_encoder", "output_mlp.0.bias", 0): ("wrong depth output dim", "outputs", " = 32 latent + 2 yaw"),
}

_EXPECTED_SHAPES: dict[str, dict[str, list[int]]] = {}


def _expected_shapes() -> dict[str, dict[str, list[int]]]:
    """Key → shape of Krabby's modules, built once (the truth the checkpoint is compared with)."""
    if not _EXPECTED_SHAPES:
        from . import networks

        modules = {
            "actor": networks.Actor(),
            "estimator": networks.DefaultEstimator(),
            "depth_encoder": networks.RecurrentDepthBackbone(),
        }
        for part, module in modules.items():
            _EXPECTED_SHAPES[part] = {k: list(v.shape) for k, v in module.state_dict().items()}
    return _EXPECTED_SHAPES


def _dim_problem(part: str, key: str, got: list[int], want: list[int]) -> str:
    """': wrong obs dim: 120 backbone inputs, expected 114 = ...' for the first meaningful wrong dim."""
    for dim, (g, w) in enumerate(zip(got, want)):
        meaning = _DIM_MEANING.get((part, key, dim))
        if meaning and g != w and len(got) == len(want):
            problem, noun, detail = meaning
            return f": {problem}: {g} {noun}, expected {w}{detail}"
    return ""


def _validate(weights: PolicyWeights) -> None:
    """Strict key and shape check (what load_state_dict(strict=True) needs), one line per refusal."""
    expected_all = _expected_shapes()
    student_ckpt = weights.kind == "student"
    where = {  # (container as the user knows it, prefix of the keys inside it)
        ("checkpoint", "actor"): ("depth_actor_state_dict", "") if student_ckpt else ("model_state_dict", "actor."),
        ("checkpoint", "estimator"): ("estimator_state_dict", ""),
        ("checkpoint", "depth_encoder"): ("depth_encoder_state_dict", ""),
        ("torchscript", "actor"): ("policy.pt", "actor."),
        ("torchscript", "estimator"): ("policy.pt", "estimator."),
        ("torchscript", "depth_encoder"): ("depth_latest.pt", "depth_encoder."),
    }
    for part in ("actor", "estimator", "depth_encoder"):
        sd = getattr(weights, part)
        if sd is None:
            continue
        expected = expected_all[part]
        label, prefix = where[(weights.source_format, part)]

        def names(keys: list[str]) -> str:
            return ", ".join(prefix + k for k in keys[:3]) + (", ..." if len(keys) > 3 else "")

        missing = [k for k in expected if k not in sd]
        if missing:
            raise PolicyLoadError(f"{weights.source}: {label} is missing {len(missing)} key(s): {names(missing)}")
        unexpected = [k for k in sd if k not in expected]
        if unexpected:
            raise PolicyLoadError(f"{weights.source}: {label} has unexpected key(s): {names(unexpected)}")
        not_tensor = [k for k in expected if not _is_tensor(sd[k])]
        if not_tensor:
            raise PolicyLoadError(f"{weights.source}: {label}['{prefix}{not_tensor[0]}'] is not a tensor")
        bad = [k for k in expected if _shape(sd[k]) != expected[k]]
        if not bad:
            continue
        # Report the mismatch that names a dimension: action dim first, then obs dim, then any.
        problems = {k: _dim_problem(part, k, _shape(sd[k]), expected[k]) for k in bad}
        key = min(bad, key=lambda k: (0 if "action" in problems[k] else 1 if problems[k] else 2))
        more = f" (+{len(bad) - 1} more mismatched)" if len(bad) > 1 else ""
        raise PolicyLoadError(
            f"{weights.source}: {label}['{prefix}{key}'] has shape {_shape(sd[key])}, expected {expected[key]}"
            f"{problems[key]}{more}"
        )


# ----------------------------------------------------------------------------- backends


class _TorchBackend:
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
            raise PolicyLoadError(f"device {device!r} is not usable by torch ({_first_line(exc)})") from None
        actor = networks.Actor()
        actor.load_state_dict(weights.actor, strict=True)
        self.actor_hist = networks.ActorStep(actor, hist_encoding=True).to(self.device).eval()
        self.actor_priv = networks.ActorStep(actor, hist_encoding=False).to(self.device).eval()
        self.estimator: Any = None
        if weights.estimator is not None:
            est = networks.DefaultEstimator()
            est.load_state_dict(weights.estimator, strict=True)
            self.estimator = networks.EstimatorStep(est).to(self.device).eval()
        self.depth: Any = None
        if weights.depth_encoder is not None:
            enc = networks.RecurrentDepthBackbone()
            enc.load_state_dict(weights.depth_encoder, strict=True)
            self.depth = networks.DepthEncoderStep(enc).to(self.device).eval()
        self._substitute = networks.substitute_priv_explicit

    def to_native(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return x.to(device=self.device, dtype=self.torch.float32)

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


class _OnnxBackend:
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
                raise PolicyLoadError(f"{file}: onnxruntime cannot load it ({_first_line(exc)})") from None
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


# ----------------------------------------------------------------------------- public API


class ParkourPolicy:
    """One loaded teacher or student policy; see the module docstring for the runtime semantics.

    Arrays may be numpy or torch; outputs have the type (and, for torch, the device) of the main input.
    """

    obs_dim: int = OBS_DIM
    action_dim: int = ACTION_DIM
    depth_latent_dim: int = DEPTH_LATENT_DIM
    depth_shape_hw: tuple[int, int] = DEPTH_SHAPE_HW

    def __init__(self, backend: _TorchBackend | _OnnxBackend, kind: PolicyKind, source: Path):
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
        if isinstance(depth, np.ndarray) or _is_tensor(depth):
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
        if not (isinstance(x, np.ndarray) or _is_tensor(x)):
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
            return y if isinstance(y, np.ndarray) else y.cpu().numpy()
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
    resolved = _resolve(path)
    if backend == "torch":
        if resolved.fmt == "onnx":
            raise PolicyLoadError(f"{resolved.path}: an ONNX export; load it with backend='onnx'")
        weights = read_weights(resolved.path)
        return ParkourPolicy(_TorchBackend(weights, device, num_threads), weights.kind, weights.source)
    if resolved.fmt == "onnx":
        manifest = read_onnx_manifest(resolved.path)
        impl = _OnnxBackend(resolved.path, device, num_threads, manifest)
        return ParkourPolicy(impl, manifest["kind"], resolved.path)
    from .onnx_export import export_onnx

    weights = read_weights(resolved.path)
    with tempfile.TemporaryDirectory(prefix="krabby-onnx-") as tmp:
        export_onnx(weights, tmp)
        manifest = read_onnx_manifest(Path(tmp))
        impl = _OnnxBackend(Path(tmp), device, num_threads, manifest)  # sessions hold the graphs in memory
    return ParkourPolicy(impl, weights.kind, weights.source)


def read_onnx_manifest(directory: Path) -> dict[str, Any]:
    """Read and check the manifest of an ONNX export directory."""
    file = directory / ONNX_MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise PolicyLoadError(f"{file}: unreadable ONNX manifest ({_first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ONNX_FORMAT:
        raise PolicyLoadError(f"{file}: not a krabby ONNX manifest (format must be {ONNX_FORMAT!r})")
    if manifest.get("format_version") != ONNX_FORMAT_VERSION:
        raise PolicyLoadError(
            f"{file}: manifest format_version {manifest.get('format_version')}, this Krabby reads {ONNX_FORMAT_VERSION}"
        )
    if manifest.get("kind") not in ("teacher", "student"):
        raise PolicyLoadError(f"{file}: kind must be 'teacher' or 'student', got {manifest.get('kind')!r}")
    if manifest.get("obs_dim") != OBS_DIM:
        raise PolicyLoadError(f"{file}: wrong obs dim {manifest.get('obs_dim')}, expected {OBS_DIM}")
    if manifest.get("action_dim") != ACTION_DIM:
        raise PolicyLoadError(f"{file}: wrong action dim {manifest.get('action_dim')}, expected {ACTION_DIM}")
    if manifest["kind"] == "student" and "depth_encoder" not in manifest.get("graphs", {}):
        raise PolicyLoadError(f"{file}: a student export without a depth_encoder graph")
    return manifest
