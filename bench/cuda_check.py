"""The CUDA inference path: fixture parity on the GPU, and batch-1 latency next to the CPU.

Why: a Jetson or a workstation runs the policy with ``--device cuda``; CI has no GPU, so this is run
by hand where one is lent (without CUDA it says it skipped, and exits 0). It prints two tables.

1. Parity: every upstream-format fixture (../shared/fixtures/parkour, see its README) on the GPU
   against the CPU reference arrays, with PyTorch's default TF32 settings (cuDNN convolutions may
   use TF32; matmuls do not) and with TF32 off. Training in Isaac Lab ran on a GPU with the defaults.
2. Latency, batch 1, policy calls as the inference client makes them (numpy in, numpy out, so each
   call includes the host<->device copies and the synchronisation): teacher act, student depth
   encoder, student act, and the whole control step (observation builder + policy + action mapper).

    python bench/cuda_check.py [--fixtures DIR] [--iters 2000]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from krabby.parkour import load_policy
from krabby.parkour.fixture_replay import load_reference, replay_student

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "parkour"


def set_tf32(on: bool) -> None:
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def teacher_errors(policy, ref) -> dict[str, float]:
    n, t = ref["obs"].shape[:2]
    obs = ref["obs"].reshape(n * t, 753)
    out = {"no estimator": np.abs(policy.act(obs, use_estimator=False).reshape(n, t, 12) - ref["teacher_jit_actions_no_estimator"]).max()}
    if policy.has_estimator:
        out["play (estimator)"] = np.abs(policy.act(obs, use_estimator=True).reshape(n, t, 12) - ref["teacher_play_actions"]).max()
    return {k: float(v) for k, v in out.items()}


def student_errors(policy, ref) -> dict[str, float]:
    """The fixture loop the CPU parity test runs (krabby.parkour.fixture_replay), play variant."""
    got = replay_student(policy, ref, use_estimator=False)
    return {"depth latent": float(np.abs(got["latent"] - ref["student_depth_latent"]).max()),
            "play actions": float(np.abs(got["actions"] - ref["student_play_actions"]).max())}


def timed(fn: Callable[[], object], iters: int) -> tuple[float, float]:
    for _ in range(max(50, iters // 10)):
        fn()
    ts = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t0
    return float(np.percentile(ts, 50) * 1e6), float(np.percentile(ts, 99) * 1e6)


def latency_rows(fixtures: Path, device: str, iters: int) -> list[tuple[str, str, float, float]]:
    from krabby.hal.backends.loopback_double import LoopbackTestDouble
    from krabby.hal.robot_profile import load_robot_profile
    from krabby.parkour.actions import ActionMapper
    from krabby.parkour.observation import ObservationBuilder

    rows = []
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (1, 753)).astype(np.float32)
    depth = rng.uniform(-0.5, 0.5, (1, 58, 87)).astype(np.float32)
    teacher = load_policy(fixtures / "teacher" / "model_0.pt", device=device, num_threads=1)
    student = load_policy(fixtures / "student" / "model_0.pt", device=device, num_threads=1)
    profile = load_robot_profile("go2")
    frame = LoopbackTestDouble(profile).read()
    builder, mapper = ObservationBuilder(profile, kind="teacher"), ActionMapper.for_kind(profile, "teacher")

    def full_step() -> object:
        o = builder.build(frame.state, frame.navigation, last_action_policy=mapper.last_raw_action, height_scan=frame.height_scan)
        return mapper.step(teacher.act(o[None], use_estimator=True)[0])

    latent, _ = student.encode_depth(depth, obs[:, :53])
    for name, fn, n in (("teacher act (estimator)", lambda: teacher.act(obs, use_estimator=True), iters),
                        ("teacher full step (build+act+map)", full_step, iters),
                        ("student depth encoder", lambda: student.encode_depth(depth, obs[:, :53]), iters // 2),
                        ("student act (held latent)", lambda: student.act(obs, use_estimator=False, depth_latent=latent), iters)):
        rows.append((name, device, *timed(fn, n)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=FIXTURES, help="the parkour fixtures folder (teacher/, student/, reference.npz)")
    ap.add_argument("--iters", type=int, default=2000, help="timed calls per latency row")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if not torch.cuda.is_available():  # CI and most dev machines: nothing to measure, and that is not a failure
        print(f"cuda_check: skipped, torch {torch.__version__} sees no CUDA device here (built with CUDA "
              f"{torch.version.cuda or 'none'}); run it where a GPU is lent. CPU parity is tests/test_policy_fixtures.py.")
        return
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, {platform.machine()}, "
          f"defaults: cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    ref = load_reference(a.fixtures)
    defaults = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    print(f"\n{'fixture':<26}{'device':<8}{'TF32':<9}{'output':<20}{'max |error| vs CPU reference':>30}")
    for source, check in (("teacher/model_0.pt", teacher_errors), ("exported_teacher", teacher_errors),
                          ("student/model_0.pt", student_errors)):
        if not (a.fixtures / source).exists():
            print(f"{source:<26}(absent)")
            continue
        for device, tf32 in (("cpu", None), ("cuda", "default"), ("cuda", "off")):
            if tf32 == "off":
                set_tf32(False)
            policy = load_policy(a.fixtures / source, device=device)
            for what, err in check(policy, ref).items():
                print(f"{source:<26}{device:<8}{tf32 or '-':<9}{what:<20}{err:>30.2e}")
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = defaults
    print(f"\n{'batch-1 call':<36}{'device':<8}{'p50 (us)':>10}{'p99 (us)':>10}")
    for device in ("cpu", "cuda"):
        for name, dev, p50, p99 in latency_rows(a.fixtures, device, a.iters):
            print(f"{name:<36}{dev:<8}{p50:>10.1f}{p99:>10.1f}")


if __name__ == "__main__":
    main()
