"""Latency of ParkourPolicy calls next to the bare network forward, torch and onnxruntime, 1 thread, batch 1.

Why: the 50 Hz control loop has 20 ms per step, and the wrapper (input checks, numpy↔torch,
estimator substitution on a copy, GRU bookkeeping) must cost little next to the network itself.
Each row times the public call and the bare forward of the same network in the same run. The
"full step" rows time what the inference client does per control step (ObservationBuilder.build
from HAL telemetry + policy + ActionMapper.step) next to the bare forward (target: within 1.3x):

- torch bare = Krabby's nn.Modules called directly under inference_mode on prepared tensors;
- onnx bare  = InferenceSession.run on prepared numpy feeds, same graphs as the policy uses.

Uses the upstream-format fixtures (../shared/fixtures/parkour) when present, otherwise random
weights (latency does not depend on weight values); the header says which.

    .venv/bin/python bench/policy_inference.py [--iters 1000]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.robot_profile import load_robot_profile
from krabby.parkour import load_policy, networks, obs_layout
from krabby.parkour.actions import ActionMapper
from krabby.parkour.observation import ObservationBuilder
from krabby.parkour.onnx_export import export_onnx
from krabby.parkour.policy_formats import PolicyWeights, read_weights
from krabby.parkour.policy_step import PolicyStep

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "parkour"


def paired_percentiles_us(
    policy_call: Callable[[], object], bare_call: Callable[[], object], iters: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """p50/p99 single-call wall time (µs) of both calls, alternated so both see the same machine load."""
    for _ in range(max(10, iters // 10)):
        policy_call()
        bare_call()
    samples_ns = np.empty((2, iters))
    for i in range(iters):
        for j, fn in enumerate((policy_call, bare_call)):
            start = time.perf_counter_ns()
            fn()
            samples_ns[j, i] = time.perf_counter_ns() - start
    (p50, b50), (p99, b99) = np.percentile(samples_ns, [50, 99], axis=1) / 1e3
    return (float(p50), float(p99)), (float(b50), float(b99))


def random_checkpoint(kind: str) -> dict[str, object]:
    """An upstream-layout checkpoint dict (spec §5) with random weights; latency does not depend on values."""
    torch.manual_seed(0)
    actor = networks.Actor().state_dict()
    ckpt: dict[str, object] = {
        "model_state_dict": {f"actor.{k}": v for k, v in actor.items()},
        "estimator_state_dict": networks.DefaultEstimator().state_dict(),
        "optimizer_state_dict": {},
        "iter": 0,
        "infos": None,
    }
    if kind == "student":
        ckpt["depth_actor_state_dict"] = actor
        ckpt["depth_encoder_state_dict"] = networks.RecurrentDepthBackbone().state_dict()
    return ckpt


def bare_torch(weights: PolicyWeights) -> dict[str, torch.nn.Module]:
    nets = networks.load_networks(weights)
    mods: dict[str, torch.nn.Module] = {"actor": networks.ActorStep(nets.actor).eval(), "estimator": nets.estimator}
    if nets.depth_encoder is not None:
        mods["depth"] = networks.DepthEncoderStep(nets.depth_encoder).eval()
    return mods


def bare_ort(onnx_dir: Path) -> dict[str, ort.InferenceSession]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = {}
    for role, file in (("actor", "actor.onnx"), ("estimator", "estimator.onnx"), ("depth", "depth_encoder.onnx")):
        if (onnx_dir / file).is_file():
            sessions[role] = ort.InferenceSession(str(onnx_dir / file), options, providers=["CPUExecutionProvider"])
    return sessions


Case = tuple[str, Callable[[], object], Callable[[], object], int]  # name, policy call, bare call, iterations


def cases_for(kind: str, backend: str, checkpoint: Path, onnx_dir: Path, n_actor: int, n_depth: int) -> list[Case]:
    """The rows for one policy kind and backend: each public call next to its bare-network equivalent."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (1, obs_layout.OBS_DIM)).astype(np.float32)
    depth = rng.uniform(-0.5, 0.5, (1, obs_layout.DEPTH_HEIGHT_PX, obs_layout.DEPTH_WIDTH_PX)).astype(np.float32)
    proprio = np.ascontiguousarray(obs[:, obs_layout.PROPRIO])
    latent = np.zeros((1, networks.DEPTH_LATENT_DIM), np.float32) if kind == "student" else None
    h = np.zeros((1, 1, networks.GRU_HIDDEN_DIM), np.float32)
    policy = load_policy(onnx_dir if backend == "onnx" else checkpoint, backend=backend)

    if backend == "torch":
        mods = bare_torch(read_weights(checkpoint))
        obs_t, depth_t, proprio_t, h_t = map(torch.from_numpy, (obs, depth, proprio, h))
        latent_t = None if latent is None else torch.from_numpy(latent)

        def bare_actor() -> object:
            with torch.inference_mode():
                return mods["actor"](obs_t, latent_t)

        def bare_est_actor() -> object:
            with torch.inference_mode():
                est = mods["estimator"](obs_t[:, obs_layout.PROPRIO])
                return mods["actor"](networks.substitute_priv_explicit(obs_t, est), latent_t)

        def bare_depth() -> object:
            with torch.inference_mode():
                return mods["depth"](depth_t, proprio_t, h_t)

    else:
        sessions = bare_ort(onnx_dir)
        latent_feed = {} if latent is None else {"depth_latent": latent}

        def bare_actor() -> object:
            return sessions["actor"].run(None, {"obs": obs, **latent_feed})

        def bare_est_actor() -> object:
            est = sessions["estimator"].run(None, {"proprio": proprio})[0]
            fed = obs.copy()
            fed[:, obs_layout.PRIV_EXPLICIT] = est
            return sessions["actor"].run(None, {"obs": fed, **latent_feed})

        def bare_depth() -> object:
            return sessions["depth"].run(None, {"depth": depth, "proprio": proprio, "h_in": h})

    # The whole control step as the inference client runs it: telemetry -> build -> infer -> map.
    profile = load_robot_profile("go2")
    frame = LoopbackTestDouble(profile).read()  # its first read carries state, scan, navigation and depth
    builder = ObservationBuilder(profile, kind=kind)
    mapper = ActionMapper.for_kind(profile, kind)
    policy_step = PolicyStep(policy)  # the inference client's own policy step

    def build() -> np.ndarray:
        return builder.build(frame.state, frame.navigation, last_action_policy=mapper.last_raw_action,
                             height_scan=frame.height_scan, depth=frame.depth)

    if kind == "teacher":
        def full_step() -> object:
            return mapper.step(policy_step.act(build()[None], use_estimator=True)[0])

        return [
            ("teacher act, no estimator", lambda: policy.act(obs, use_estimator=False), bare_actor, n_actor),
            ("teacher act, estimator", lambda: policy.act(obs, use_estimator=True), bare_est_actor, n_actor),
            ("teacher full step", full_step, bare_est_actor, n_actor),
        ]

    build()  # the student's depth buffer holds a frame from here on
    policy_step.latent, policy_step.yaw_raw = latent, np.zeros((1, networks.YAW_DIM), np.float32)

    def full_step_held() -> object:
        return mapper.step(policy_step.act(build()[None], use_estimator=True)[0])

    def full_step_encoder() -> object:
        o = build()[None]
        policy_step.encode(builder.depth_for_encoder[None], o)
        return mapper.step(policy_step.act(o, use_estimator=True)[0])

    def step() -> object:
        held, _ = policy.encode_depth(depth, proprio)
        return policy.act(obs, use_estimator=True, depth_latent=held)

    def bare_step() -> object:
        bare_depth()
        return bare_est_actor()

    return [
        ("student act (held latent)", lambda: policy.act(obs, use_estimator=True, depth_latent=latent),
         bare_est_actor, n_actor),
        ("student encode_depth", lambda: policy.encode_depth(depth, proprio), bare_depth, n_depth),
        ("student encoder step (both)", step, bare_step, n_depth),
        ("student full step, held latent", full_step_held, bare_est_actor, n_actor),
        ("student full step, encoder", full_step_encoder, bare_step, n_depth),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000, help="timed calls per actor row (depth rows: /5)")
    parser.add_argument("--random-weights", action="store_true", help="ignore the fixtures")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a benchmark script: setting the process-wide count is the point
    have_fixtures = not args.random_weights and all(
        (FIXTURES / kind / "model_0.pt").is_file() for kind in ("teacher", "student")
    )
    n_actor, n_depth = args.iters, max(20, args.iters // 5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="krabby-bench-") as tmp:
        for kind in ("teacher", "student"):
            if have_fixtures:
                checkpoint = FIXTURES / kind / "model_0.pt"
            else:  # random weights laid out as an upstream checkpoint, so the real loader runs
                checkpoint = Path(tmp) / f"{kind}_model_0.pt"
                torch.save(random_checkpoint(kind), checkpoint)
            onnx_dir = Path(tmp) / kind
            export_onnx(checkpoint, onnx_dir, verify=False)
            for backend in ("torch", "onnx"):
                for name, policy_call, bare_call, iters in cases_for(
                    kind, backend, checkpoint, onnx_dir, n_actor, n_depth
                ):
                    rows.append((name, backend, *paired_percentiles_us(policy_call, bare_call, iters)))

    source = f"upstream-format fixtures ({FIXTURES})" if have_fixtures else "RANDOM weights (no fixtures used)"
    print(f"weights: {source}")
    print(
        f"torch {torch.__version__} threads={torch.get_num_threads()}, onnxruntime {ort.__version__} "
        f"intra_op_threads=1, batch 1, numpy in/out, {platform.machine()} {platform.processor()}".rstrip()
    )
    print(f"iterations: {n_actor} per actor row, {n_depth} per depth row; policy and bare calls alternate")
    columns = ("policy p50", "p99", "bare p50", "p99", "overhead p50")
    header = f"{'call':<28} {'backend':<7} " + " ".join(f"{c:>12}" for c in columns)
    print(header)
    print("-" * len(header))
    for name, backend, (p50, p99), (b50, b99) in rows:
        cells = [f"{v:.1f}µs" for v in (p50, p99, b50, b99)] + [f"{p50 - b50:+.1f}µs"]
        print(f"{name:<28} {backend:<7} " + " ".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    main()
