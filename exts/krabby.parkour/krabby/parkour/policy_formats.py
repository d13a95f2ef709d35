"""Policy artifacts: read any upstream checkpoint, TorchScript export or Krabby ONNX export into checked weights.

``read_weights`` accepts what Isaaclab_Parkour writes (spec §5, §6): a training checkpoint ``model_*.pt``,
an ``exported_teacher/`` or ``exported_deploy/`` TorchScript directory, or the run directory holding exactly
one of those; ``read_onnx_manifest`` checks a directory written by ``krabby.parkour.onnx_export``. Every
shape is checked against the networks' (strict), and anything else is refused with a one-line
``PolicyLoadError``. Imports only numpy at import time (torch when a checkpoint is read).
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .obs_layout import DEPTH_HEIGHT_PX, DEPTH_WIDTH_PX, NUM_JOINTS, NUM_PROPRIO, OBS_DIM, PRIV_EXPLICIT

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


def default_backend(path: str | Path) -> Backend:
    """The runtime a policy file runs on unless the user says otherwise: onnx for an ONNX export,
    torch for everything else (also when ``path`` cannot be resolved: the loader then says why)."""
    try:
        return "onnx" if resolve_artifact(Path(path)).fmt == "onnx" else "torch"
    except PolicyLoadError:
        return "torch"


def resolve_artifact(path: Path) -> _Resolved:
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
        return resolve_artifact(candidates[0])
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def read_weights(path: str | Path) -> PolicyWeights:
    """Read and validate the state dicts of a checkpoint or TorchScript export directory.

    Raises ``PolicyLoadError`` for anything that would not load strictly into Krabby's modules.
    """
    resolved = resolve_artifact(Path(path))
    if resolved.fmt == "onnx":
        raise PolicyLoadError(f"{resolved.path}: an ONNX export; load it with backend='onnx'")
    if resolved.fmt == "checkpoint":
        weights = _read_checkpoint(resolved.path)
    else:
        weights = _read_torchscript_dir(resolved.path)
    _validate(weights)
    return weights


TRUST_CHECKPOINTS_ENV = "KRABBY_TRUST_CHECKPOINTS"
"""Set to 1 to load checkpoints with full pickle (``weights_only=False``), which runs code from the file."""


def _read_checkpoint(path: Path) -> PolicyWeights:
    import pickle

    import torch

    # Upstream writes a plain dict of tensors, numbers and None (spec §5), which torch's weights-only
    # unpickler reads; anything else in a pickle can run code on load, so it needs the user's word.
    trusted = os.environ.get(TRUST_CHECKPOINTS_ENV) == "1"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        refused = re.search(r"GLOBAL ([\w.]+)", text)
        if refused and not trusted:
            raise PolicyLoadError(
                f"{path}: holds a Python object beyond tensors and numbers ({refused.group(1)}), which torch's "
                f"safe loader refuses: unpickling it runs code from the file. If you trust where the file came "
                f"from, set {TRUST_CHECKPOINTS_ENV}=1 and run again"
            ) from None
        detail = text.partition("WeightsUnpickler error:")[2].strip() or text  # the safe loader's reason
        raise PolicyLoadError(f"{path}: not a torch checkpoint ({detail.splitlines()[0]})") from None
    except Exception as exc:  # torch raises many types for non-checkpoints
        raise PolicyLoadError(f"{path}: not a torch checkpoint ({first_line(exc)})") from None
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
    if is_tensor(critic_w) and critic_w.ndim == 2 and critic_w.shape[1] != OBS_DIM:
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
    import torch  # noqa: F401  (fails here, with torch's own message, when torch is missing)

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
        raise PolicyLoadError(f"{path}: not a TorchScript module ({first_line(exc)})") from None


def is_tensor(value: Any) -> bool:
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
        not_tensor = [k for k in expected if not is_tensor(sd[k])]
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


def read_onnx_manifest(directory: Path) -> dict[str, Any]:
    """Read and check the manifest of an ONNX export directory."""
    file = directory / ONNX_MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise PolicyLoadError(f"{file}: unreadable ONNX manifest ({first_line(exc)})") from None
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
