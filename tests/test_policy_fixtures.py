"""Parity with the upstream-generated reference arrays, for every input form and both backends.

The fixtures (../shared/fixtures/parkour, see its README) were written by the upstream training
code on random weights; reproducing them to 1e-5 means real checkpoints load and run the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "parkour"
if not (FIXTURES / "reference.npz").is_file():
    pytest.skip(f"parkour fixtures not found at {FIXTURES}", allow_module_level=True)

import torch  # noqa: E402

from krabby.parkour import ParkourPolicy, load_policy  # noqa: E402
from krabby.parkour.fixture_replay import load_reference, replay_student  # noqa: E402
from krabby.parkour.onnx_export import export_onnx, main as export_main  # noqa: E402

ATOL = 1e-5
TEACHER_SOURCES = ["teacher/model_0.pt", "exported_teacher"]
STUDENT_SOURCES = ["student/model_0.pt", "exported_deploy"]
BACKENDS = ["torch", "onnx"]


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return load_reference(FIXTURES)


_POLICIES: dict[tuple[str, str], ParkourPolicy] = {}


def get_policy(source: str, backend: str) -> ParkourPolicy:
    """Load once per module run (ONNX from a checkpoint exports first, ~1 s)."""
    key = (source, backend)
    if key not in _POLICIES:
        _POLICIES[key] = load_policy(FIXTURES / source, backend=backend)
    policy = _POLICIES[key]
    policy.reset()
    return policy


def assert_close(got: Any, want: np.ndarray, what: str) -> None:
    got = got.numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == want.shape, what
    err = float(np.abs(got - want).max())
    assert err <= ATOL, f"{what}: max |error| {err:.2e} > {ATOL}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", TEACHER_SOURCES)
def test_teacher_variants(source: str, backend: str, ref: dict[str, np.ndarray]) -> None:
    policy = get_policy(source, backend)
    assert (policy.kind, policy.obs_dim, policy.action_dim) == ("teacher", 753, 12)
    n, t = ref["obs"].shape[:2]
    obs = ref["obs"].reshape(n * t, 753)

    def run(x: np.ndarray, **kw: Any) -> np.ndarray:
        return policy.act(x, **kw).reshape(n, t, 12)

    assert_close(run(obs, use_estimator=False), ref["teacher_jit_actions_no_estimator"], "no estimator")
    # priv_explicit from the reference estimator: works for exports without an estimator too
    obs_est = obs.copy()
    obs_est[:, 185:194] = ref["teacher_estimator_out"].reshape(n * t, 9)
    assert_close(run(obs_est, use_estimator=False), ref["teacher_play_actions"], "play, estimate given")
    assert_close(
        run(obs_est, use_estimator=False, hist_encoding=False), ref["teacher_demo_actions_priv_encoder"], "demo"
    )
    if source.endswith(".pt"):
        assert policy.has_estimator
        assert_close(policy.estimate(obs).reshape(n, t, 9), ref["teacher_estimator_out"], "estimator")
        assert_close(run(obs, use_estimator=True), ref["teacher_play_actions"], "play")
        assert_close(
            run(obs, use_estimator=True, hist_encoding=False), ref["teacher_demo_actions_priv_encoder"], "demo"
        )
    else:
        assert not policy.has_estimator
        with pytest.raises(ValueError, match="no estimator"):
            policy.act(obs, use_estimator=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", STUDENT_SOURCES)
@pytest.mark.parametrize("variant", ["play", "deploy"])
def test_student_replay(source: str, backend: str, variant: str, ref: dict[str, np.ndarray]) -> None:
    policy = get_policy(source, backend)
    assert (policy.kind, policy.obs_dim, policy.action_dim) == ("student", 753, 12)
    got = replay_student(policy, ref, use_estimator=variant == "deploy")
    assert_close(got["latent"], ref["student_depth_latent"], "depth latent")
    assert_close(got["yaw_raw"], ref["student_yaw_raw"], "yaw_raw")
    assert_close(got["obs_fed"], ref[f"student_{variant}_obs_fed_to_actor"], "obs fed to actor")
    assert_close(got["actions"], ref[f"student_{variant}_actions"], f"{variant} actions")


def test_policy_step_runs_the_encoder_on_refresh_and_after_a_reset(ref: dict[str, np.ndarray]) -> None:
    """Between refreshes the student acts on what it holds; after a reset nothing is held, so the very
    next step encodes even off the schedule (a new episode may start at any global step). A teacher never does."""
    from krabby.parkour import obs_layout as L
    from krabby.parkour.policy_step import PolicyStep

    step = PolicyStep(get_policy("student/model_0.pt", "torch"))
    obs = ref["obs"][:, 0].copy()
    assert step.wants_depth(refresh=False)  # nothing held yet
    step.encode(ref["depth"][:, 0], obs)
    first = step.act(obs, use_estimator=False)
    assert not step.wants_depth(refresh=False) and step.wants_depth(refresh=True)
    np.testing.assert_array_equal(obs[:, L.DELTA_YAWS], L.PREDICTED_YAW_SCALE * step.yaw_raw)  # the held yaw went into obs
    step.reset()
    assert step.latent is None and step.wants_depth(refresh=False)
    step.encode(ref["depth"][:, 0], obs)
    assert_close(step.act(obs, use_estimator=False), first, "same first step after a reset")
    assert not PolicyStep(get_policy("teacher/model_0.pt", "torch")).wants_depth(refresh=True)


def test_student_estimator_matches_teacher_estimator(ref: dict[str, np.ndarray]) -> None:
    """Student checkpoints keep the teacher's estimator; exported_deploy embeds the same one."""
    obs = ref["obs"][:, 0]
    for source in STUDENT_SOURCES:
        assert_close(get_policy(source, "torch").estimate(obs), ref["teacher_estimator_out"][:, 0], source)


@pytest.mark.parametrize("backend", BACKENDS)
def test_act_does_not_modify_callers_obs(backend: str, ref: dict[str, np.ndarray]) -> None:
    obs = ref["obs"][:, 0].copy()
    before = obs.copy()
    teacher = get_policy("teacher/model_0.pt", backend)
    actions = teacher.act(obs, use_estimator=True)
    np.testing.assert_array_equal(obs, before)
    assert not np.allclose(actions, teacher.act(obs, use_estimator=False))  # the estimator did change the input

    obs_t = torch.from_numpy(obs.copy())
    teacher.act(obs_t, use_estimator=True)
    np.testing.assert_array_equal(obs_t.numpy(), before)

    student = get_policy("exported_deploy", backend)  # upstream's deploy policy.pt writes in place; ours must not
    latent, _ = student.encode_depth(ref["depth"][:, 0], obs[:, :53])
    proprio_before = obs[:, :53].copy()
    student.act(obs, use_estimator=True, depth_latent=latent)
    np.testing.assert_array_equal(obs, before)
    np.testing.assert_array_equal(obs[:, :53], proprio_before)  # encode_depth zeroes 6:8 on a copy


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_in_torch_out(backend: str, ref: dict[str, np.ndarray]) -> None:
    policy = get_policy("teacher/model_0.pt", backend)
    obs = ref["obs"][:, 3]
    out_t = policy.act(torch.from_numpy(obs), use_estimator=True)
    out_np = policy.act(obs, use_estimator=True)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == (2, 12)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    assert_close(out_t, out_np, "torch vs numpy input")
    assert_close(out_np, ref["teacher_play_actions"][:, 3], "play step 3")
    out_t[0, 0] = 0.0  # an ordinary tensor, not an inference-mode one: callers may edit it in place


@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_state_persists_resets_and_pins_batch(backend: str, ref: dict[str, np.ndarray]) -> None:
    policy = get_policy("exported_deploy", backend)
    depth, proprio = ref["depth"][:, 0], ref["obs"][:, 0, :53]
    first, _ = policy.encode_depth(depth, proprio)
    second, _ = policy.encode_depth(depth, proprio)
    assert not np.allclose(first, second)  # same input, advanced state
    with pytest.raises(ValueError, match="batch 2, got batch 1.*reset"):
        policy.encode_depth(depth[:1], proprio[:1])
    policy.reset()
    again, _ = policy.encode_depth(depth, proprio)
    np.testing.assert_allclose(again, first, atol=ATOL)
    policy.reset()
    single, _ = policy.encode_depth(depth[1:], proprio[1:])  # a new batch size after reset is fine
    np.testing.assert_allclose(single, first[1:], atol=ATOL)
    with pytest.raises(ValueError, match="swapped"):
        policy.encode_depth(np.zeros((2, 87, 58), np.float32), proprio)


def test_misuse_is_refused(ref: dict[str, np.ndarray]) -> None:
    teacher, student = get_policy("teacher/model_0.pt", "torch"), get_policy("student/model_0.pt", "torch")
    obs = ref["obs"][:, 0]
    with pytest.raises(ValueError, match="needs depth_latent"):
        student.act(obs, use_estimator=False)
    with pytest.raises(ValueError, match="teacher"):
        teacher.act(obs, use_estimator=False, depth_latent=np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError, match="student"):
        teacher.encode_depth(ref["depth"][:, 0], obs[:, :53])
    with pytest.raises(ValueError, match=r"\[N, 753\], got \[2, 752\]"):
        teacher.act(obs[:, :752], use_estimator=False)
    with pytest.raises(ValueError, match="batch 1, expected 2"):
        student.act(obs, use_estimator=False, depth_latent=np.zeros((1, 32), np.float32))
    with pytest.raises(TypeError):
        teacher.act(obs.tolist(), use_estimator=False)
    with pytest.raises(TypeError, match="floating"):
        teacher.act(obs.astype(np.int32), use_estimator=False)


def test_onnx_export_dir_roundtrip(tmp_path: Path, ref: dict[str, np.ndarray]) -> None:
    """The written directory reloads as a policy; the manifest names the source by sha256."""
    out = tmp_path / "onnx"
    manifest = export_onnx(FIXTURES / "student" / "model_0.pt", out)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["kind"] == "student" and manifest["obs_dim"] == 753 and manifest["action_dim"] == 12
    assert set(manifest["graphs"]) == {"actor", "actor_priv_encoder", "estimator", "depth_encoder"}
    assert manifest["graphs"]["depth_encoder"]["inputs"] == ["depth", "proprio", "h_in"]
    assert manifest["graphs"]["depth_encoder"]["outputs"] == ["latent", "yaw_raw", "h_out"]
    want_sha = hashlib.sha256((FIXTURES / "student" / "model_0.pt").read_bytes()).hexdigest()
    assert manifest["source"]["sha256"] == {"model_0.pt": want_sha}
    for meta in manifest["graphs"].values():
        assert (out / meta["file"]).is_file() and meta["verify_max_abs_err"] < 1e-5

    for path in (out, tmp_path):  # the directory itself, and its parent holding only it
        policy = load_policy(path, backend="onnx")
        assert policy.kind == "student" and policy.backend == "onnx"
        got = replay_student(policy, ref, use_estimator=True)
        assert_close(got["actions"], ref["student_deploy_actions"], f"deploy actions from {path}")


def test_export_cli_teacher(tmp_path: Path, ref: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "teacher_onnx"
    assert export_main([str(FIXTURES / "exported_teacher"), str(out)]) == 0
    assert "actor.onnx" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "teacher" and not manifest["has_estimator"] and "estimator" not in manifest["graphs"]
    policy = load_policy(out, backend="onnx")
    n, t = ref["obs"].shape[:2]
    actions = policy.act(ref["obs"].reshape(n * t, 753), use_estimator=False).reshape(n, t, 12)
    assert_close(actions, ref["teacher_jit_actions_no_estimator"], "CLI export")
    assert export_main([str(tmp_path / "missing.pt"), str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_dynamo_exporter_teacher(tmp_path: Path, ref: dict[str, np.ndarray]) -> None:
    """The fallback exporter produces the same graphs (teacher only: the depth graph takes ~5 s)."""
    manifest = export_onnx(FIXTURES / "teacher" / "model_0.pt", tmp_path, exporter="dynamo")
    assert manifest["exporter"] == "dynamo"
    policy = load_policy(tmp_path, backend="onnx")
    obs = ref["obs"][:, 7]
    assert_close(policy.act(obs, use_estimator=True), ref["teacher_play_actions"][:, 7], "dynamo play")
    assert_close(
        policy.act(obs, use_estimator=True, hist_encoding=False),
        ref["teacher_demo_actions_priv_encoder"][:, 7],
        "dynamo demo",
    )
