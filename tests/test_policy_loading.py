"""load_policy refuses what it cannot run with one clear line, and accepts what upstream writes.

Bad checkpoints are built from freshly constructed modules (no fixtures needed) and, where the
fixtures exist, by mutating the real upstream-format dicts.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

from krabby.parkour import ParkourPolicy, PolicyLoadError, load_policy
from krabby.parkour import networks, policy_formats as policy_mod

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "parkour"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "teacher" / "model_0.pt").is_file(), reason=f"parkour fixtures not found at {FIXTURES}"
)


def fresh_teacher_checkpoint() -> dict[str, Any]:
    """A teacher checkpoint laid out as OnPolicyRunnerWithExtractor.save writes it (spec §5), random weights."""
    torch.manual_seed(0)
    actor, estimator = networks.Actor(), networks.DefaultEstimator()
    critic = nn.Sequential(
        nn.Linear(753, 512), nn.ELU(), nn.Linear(512, 256), nn.ELU(), nn.Linear(256, 128), nn.ELU(), nn.Linear(128, 1)
    )
    model_sd = {"std": torch.ones(12)}
    model_sd.update({f"actor.{k}": v for k, v in actor.state_dict().items()})
    model_sd.update({f"critic.{k}": v for k, v in critic.state_dict().items()})
    return {
        "model_state_dict": model_sd,
        "estimator_state_dict": estimator.state_dict(),
        "optimizer_state_dict": {"state": {}, "param_groups": []},
        "iter": 0,
        "infos": None,
    }


@pytest.fixture
def save(tmp_path: Path) -> Callable[[Any, str], Path]:
    def _save(obj: Any, name: str = "model_0.pt") -> Path:
        path = tmp_path / name
        torch.save(obj, path)
        return path

    return _save


def refusal(path: Path | str, **kwargs: Any) -> str:
    """The message of the PolicyLoadError raised by load_policy; it must be a single line."""
    with pytest.raises(PolicyLoadError) as info:
        load_policy(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ without fixtures


def test_fresh_teacher_loads_and_runs(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    policy = load_policy(save(ckpt))
    assert isinstance(policy, ParkourPolicy) and policy.kind == "teacher" and policy.has_estimator
    obs = np.random.default_rng(0).uniform(-1, 1, (3, 753)).astype(np.float32)
    actor = networks.Actor()
    actor.load_state_dict({k[6:]: v for k, v in ckpt["model_state_dict"].items() if k.startswith("actor.")})
    with torch.inference_mode():
        want = actor(torch.from_numpy(obs), True).numpy()
    np.testing.assert_allclose(policy.act(obs, use_estimator=False), want, atol=1e-6)


def test_load_networks_loads_strictly_and_only_the_parts_the_policy_has(save: Callable[..., Path]) -> None:
    """What the ONNX exporter builds from: a teacher has an estimator and no depth encoder; a key the
    modules do not have is refused, not dropped."""
    weights = policy_mod.read_weights(save(fresh_teacher_checkpoint()))
    nets = networks.load_networks(weights)
    assert nets.estimator is not None and nets.depth_encoder is None and not nets.actor.training
    extra = dataclasses.replace(weights, actor={**weights.actor, "extra.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        networks.load_networks(extra)


def test_not_a_path(tmp_path: Path) -> None:
    assert "no such file or directory" in refusal(tmp_path / "nope" / "model_9.pt")


def test_empty_dir(tmp_path: Path) -> None:
    assert "no policy here" in refusal(tmp_path)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model_0.pt"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    assert "not a torch checkpoint" in refusal(path)


class _OpensAFileWhenUnpickled:
    """What a hostile checkpoint can hold: pickle calls open(marker, "w") while loading it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_that_would_run_code_is_refused_unless_trusted(
    save: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream checkpoints are tensors and numbers (spec §5), so torch's weights-only loader reads them
    (the fixtures and the bundled policy load that way); a pickle that calls code is refused, and the
    code does not run, unless the user says they trust the file."""
    marker = tmp_path / "ran"
    path = save({**fresh_teacher_checkpoint(), "infos": _OpensAFileWhenUnpickled(marker)})
    message = refusal(path)
    assert "(io.open)" in message and f"{policy_mod.TRUST_CHECKPOINTS_ENV}=1" in message
    assert not marker.exists()
    monkeypatch.setenv(policy_mod.TRUST_CHECKPOINTS_ENV, "1")
    assert load_policy(path).kind == "teacher"
    assert marker.exists()  # full pickle: the file's code ran, which is why it needs the user's word


def test_plain_tensor(save: Callable[..., Path]) -> None:
    message = refusal(save(torch.zeros(3, 4)))
    assert "not a training checkpoint" in message and "Tensor" in message


def test_missing_top_level_key(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    del ckpt["estimator_state_dict"]
    message = refusal(save(ckpt))
    assert "missing key(s) estimator_state_dict" in message


def test_missing_actor_keys(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    del ckpt["model_state_dict"]["actor.scan_encoder.4.bias"]
    message = refusal(save(ckpt))
    assert "model_state_dict is missing 1 key(s): actor.scan_encoder.4.bias" in message


def test_unexpected_actor_key(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    ckpt["model_state_dict"]["actor.extra.weight"] = torch.zeros(2)
    assert "model_state_dict has unexpected key(s): actor.extra.weight" in refusal(save(ckpt))


def test_wrong_obs_dim_in_backbone(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    ckpt["model_state_dict"]["actor.actor_backbone.0.weight"] = torch.zeros(512, 120)
    message = refusal(save(ckpt))
    assert "wrong obs dim" in message
    assert "actor_backbone.0.weight" in message and "[512, 120]" in message and "[512, 114]" in message


def test_wrong_obs_dim_in_critic(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    ckpt["model_state_dict"]["critic.0.weight"] = torch.zeros(512, 760)
    message = refusal(save(ckpt))
    assert "wrong obs dim" in message and "760" in message and "753" in message


def test_wrong_action_dim(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    ckpt["model_state_dict"]["actor.actor_backbone.6.weight"] = torch.zeros(13, 128)
    ckpt["model_state_dict"]["actor.actor_backbone.6.bias"] = torch.zeros(13)
    message = refusal(save(ckpt))
    assert "wrong action dim" in message and "13 actions, expected 12" in message
    assert "(+1 more mismatched)" in message


def test_half_student(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    ckpt["depth_encoder_state_dict"] = {}
    assert "missing depth_actor_state_dict" in refusal(save(ckpt))


def test_not_actor_critic_rma(save: Callable[..., Path]) -> None:
    ckpt = fresh_teacher_checkpoint()
    ckpt["model_state_dict"] = {"actor.0.weight": torch.zeros(512, 753), "std": torch.ones(12)}
    assert "missing 26 key(s)" in refusal(save(ckpt))


def test_bad_backend_and_onnx_dir_with_torch(tmp_path: Path, save: Callable[..., Path]) -> None:
    path = save(fresh_teacher_checkpoint())
    assert "backend must be" in refusal(path, backend="tensorrt")
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "manifest.json").write_text(json.dumps({"format": "krabby.parkour.onnx"}))
    assert "backend='onnx'" in refusal(onnx_dir)
    assert "format_version" in refusal(onnx_dir, backend="onnx")


def test_onnx_manifest_with_wrong_dims(tmp_path: Path, save: Callable[..., Path]) -> None:
    from krabby.parkour.onnx_export import export_onnx

    out = tmp_path / "onnx"
    export_onnx(save(fresh_teacher_checkpoint()), out, verify=False)
    assert load_policy(out, backend="onnx").kind == "teacher"
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["obs_dim"] = 760
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "wrong obs dim" in refusal(out, backend="onnx")
    (out / "actor.onnx").unlink()
    manifest["obs_dim"] = 753
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "actor.onnx, which is missing" in refusal(out, backend="onnx")


def test_parent_dir_resolution(tmp_path: Path) -> None:
    ckpt = fresh_teacher_checkpoint()
    torch.save(ckpt, tmp_path / "model_100.pt")
    assert load_policy(tmp_path).source == tmp_path / "model_100.pt"  # one candidate: unambiguous
    torch.save(ckpt, tmp_path / "model_200.pt")
    message = refusal(tmp_path)
    assert "ambiguous" in message and "model_100.pt" in message and "model_200.pt" in message


def test_single_onnx_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.onnx"
    path.write_bytes(b"\x08\x07")
    assert "pass the directory" in refusal(path)


def test_import_does_not_import_torch() -> None:
    code = "import sys, krabby.parkour as kp; kp.load_policy; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_constants_agree_with_networks() -> None:
    """policy.py repeats a few widths so it can stay torch-free; they must match the modules."""
    assert policy_mod.ACTION_DIM == networks.ACTION_DIM == 12
    assert policy_mod.DEPTH_LATENT_DIM == networks.DEPTH_LATENT_DIM
    assert policy_mod.GRU_HIDDEN_DIM == networks.GRU_HIDDEN_DIM
    assert policy_mod.OBS_DIM == 753


# ------------------------------------------------------------------ mutating the real fixtures


@needs_fixtures
def test_fixture_teacher_wrong_obs_dim(save: Callable[..., Path]) -> None:
    ckpt = torch.load(FIXTURES / "teacher" / "model_0.pt", weights_only=False)
    ckpt["model_state_dict"]["actor.history_encoder.encoder.0.weight"] = torch.zeros(30, 48)
    message = refusal(save(ckpt))
    assert "wrong obs dim" in message and "48 proprio terms per history step, expected 53" in message


@needs_fixtures
def test_fixture_student_bad_depth_encoder(save: Callable[..., Path]) -> None:
    ckpt = torch.load(FIXTURES / "student" / "model_0.pt", weights_only=False)
    del ckpt["depth_encoder_state_dict"]["rnn.weight_hh_l0"]
    message = refusal(save(ckpt))
    assert "depth_encoder_state_dict is missing 1 key(s): rnn.weight_hh_l0" in message

    ckpt = torch.load(FIXTURES / "student" / "model_0.pt", weights_only=False)
    ckpt["depth_actor_state_dict"]["actor_backbone.6.bias"] = torch.zeros(16)
    assert "depth_actor_state_dict['actor_backbone.6.bias']" in (message := refusal(save(ckpt)))
    assert "wrong action dim" in message


@needs_fixtures
def test_fixture_export_dirs_mismatched(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(FIXTURES / "exported_teacher" / "policy.pt", mixed / "policy.pt")
    shutil.copy(FIXTURES / "exported_deploy" / "depth_latest.pt", mixed / "depth_latest.pt")
    assert "forward takes 1 input(s) but depth_latest.pt is beside it" in refusal(mixed)

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(FIXTURES / "exported_deploy" / "policy.pt", lone / "policy.pt")
    assert "without depth_latest.pt" in refusal(lone)

    only_depth = tmp_path / "only_depth"
    only_depth.mkdir()
    shutil.copy(FIXTURES / "exported_deploy" / "depth_latest.pt", only_depth / "depth_latest.pt")
    assert "no policy.pt" in refusal(only_depth)


@needs_fixtures
def test_fixture_torchscript_file_and_parent(tmp_path: Path) -> None:
    """A TorchScript file resolves to its export dir; a run dir with one export resolves to it."""
    assert load_policy(FIXTURES / "exported_deploy" / "policy.pt").kind == "student"
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "exported_teacher", run / "exported_teacher")
    assert load_policy(run).source == run / "exported_teacher"
    shutil.copytree(FIXTURES / "exported_deploy", run / "exported_deploy")
    assert "ambiguous" in refusal(run)


def test_garbage_torchscript_in_export_dir(tmp_path: Path) -> None:
    (tmp_path / "policy.pt").write_bytes(b"not a zip archive")
    assert "policy.pt: not a TorchScript module" in refusal(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only torch")
def test_unusable_device(save: Callable[..., Path]) -> None:
    assert "device 'cuda' is not usable by torch" in refusal(save(fresh_teacher_checkpoint()), device="cuda")
