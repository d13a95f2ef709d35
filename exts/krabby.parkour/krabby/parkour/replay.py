"""krabby-replay: run a recorded log through the same builder and policy and compare the actions.

    krabby-replay runs/latest/log.mcap [--checkpoint PATH] [--backend torch|onnx] [--out actions.npz]

Every control step in the log names the telemetry messages (kind, session, seq) that fed it; the
replay decodes those exact bytes with the protocol module, rebuilds the observation with
``ObservationBuilder``, runs the policy and maps the action, then reports the largest difference
from the recorded actions. Zero means the deployment computed exactly what this code computes.
A log cut short (a crash mid-write) is replayed as far as its complete records go, with a
warning. Exit status: 0 when the difference is within --tolerance, 1 otherwise, 2 on a usage
error (no such file, not an MCAP run log, a log without control steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from krabby.hal.protocol import Kind, ProtocolError, StateLayout, decode, unpack_depth, unpack_height_scan, unpack_navigation, unpack_state
from krabby.hal.robot_profile import profile_from_dict
from krabby.hal.types import NavigationCommand

from .actions import ActionMapper
from .cli import USAGE_ERROR, OneLineParser
from .observation import ObservationBuilder
from .policy_step import PolicyStep
from .record import CH_RX, CH_STEP, open_log, unpack_frames


@dataclass
class ReplayResult:
    steps: int
    max_abs_diff: float
    recorded: np.ndarray  # (T, 12) policy order
    replayed: np.ndarray
    targets_rad: np.ndarray  # (T, J) robot order, replayed
    truncated: str | None = None  # why the log's end is missing, None for a complete log


def replay(log_path: str | Path, checkpoint: str | None = None, backend: str | None = None) -> ReplayResult:
    """``backend`` None = the runtime the log was recorded with."""
    from . import load_policy

    log = open_log(log_path, topics=[CH_RX, CH_STEP])
    meta, messages = log.metadata, log.messages
    if "welcome" not in meta:
        raise ValueError(f"{log_path}: not a Krabby run log (no 'krabby' metadata with the HAL handshake)")
    welcome = json.loads(meta["welcome"])
    profile = profile_from_dict(welcome["robot_profile"], origin=f"{log_path} handshake")
    layout = StateLayout(profile.num_joints, profile.num_feet)
    backend = backend or meta.get("backend", "torch")
    policy = load_policy(checkpoint or meta["checkpoint"], backend=backend, num_threads=1)
    builder = ObservationBuilder(profile, kind=policy.kind)
    mapper = ActionMapper.for_kind(profile, policy.kind)
    received: dict[tuple[str, int, int], Any] = {}
    recorded, replayed, targets = [], [], []
    policy_step = PolicyStep(policy)  # the inference loop's own step: a replay runs what ran
    for m in messages:
        if m.channel == CH_RX:
            try:
                msg = decode(unpack_frames(m.data))
            except ProtocolError:
                continue  # recorded as received, refused as the live client refused it
            h = msg.header
            value = {
                Kind.STATE: lambda: unpack_state(msg.payload, h.stamp_ns, layout),
                Kind.NAVIGATION: lambda: unpack_navigation(msg.payload, h.stamp_ns),
                Kind.HEIGHT_SCAN: lambda: unpack_height_scan(msg.payload, h.stamp_ns),
                Kind.DEPTH: lambda: unpack_depth(msg.payload, h.stamp_ns),
            }.get(h.kind)
            if value is not None:
                received[(h.kind.name, h.session_id, h.seq)] = value()
            continue
        if m.channel != CH_STEP:
            continue
        step = json.loads(m.data)
        if step.get("reset"):
            builder.reset()
            mapper.reset()
            policy_step.reset()
            continue
        inputs = {k: received.get((k, s, q)) for k, (s, q) in step["inputs"].items()}
        state = inputs["STATE"]
        if state is None:
            raise ValueError(f"{log_path}: step {step['global_step']} uses a STATE that is not in the log")
        nav = inputs.get("NAVIGATION") or NavigationCommand(state.stamp_ns, 0.5, 0.0, 0.0)
        obs = builder.build(state, nav, last_action_policy=mapper.last_raw_action,
                            height_scan=inputs.get("HEIGHT_SCAN"), depth=inputs.get("DEPTH"))
        action = policy_step.from_builder(builder, obs, use_estimator=step["use_estimator"])
        targets.append(mapper.step(action))
        recorded.append(np.asarray(step["action"], dtype=np.float32))
        replayed.append(np.asarray(action, dtype=np.float32))
    if not recorded:
        raise ValueError(f"{log.truncated}, and no complete control step" if log.truncated else
                         f"{log_path}: the log holds no control steps")
    rec, rep = np.stack(recorded), np.stack(replayed)
    return ReplayResult(len(rec), float(np.max(np.abs(rec - rep))), rec, rep, np.stack(targets), log.truncated)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="krabby-replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="a run log (.mcap, written with --record) or a run folder (runs/latest)")
    ap.add_argument("--checkpoint", help="policy to replay with (default: the one recorded in the log)")
    ap.add_argument("--backend", choices=["torch", "onnx"], default=None,
                    help="inference runtime (default: the one the log was recorded with)")
    ap.add_argument("--out", help="write recorded and replayed actions to this .npz")
    ap.add_argument("--tolerance", type=float, default=1e-5, help="largest acceptable |difference| (default 1e-5)")
    args = ap.parse_args(argv)
    if Path(args.log).is_dir():  # a run folder, as krabby-plot takes it
        args.log = str(Path(args.log) / "log.mcap")
    try:
        result = replay(args.log, args.checkpoint, args.backend)
    except OSError as e:
        print(f"krabby-replay: {args.log}: {e.strerror or e}", file=sys.stderr)
        return USAGE_ERROR
    except ValueError as e:  # LogReadError, PolicyLoadError and a log without steps are ValueErrors
        print(f"krabby-replay: {e}", file=sys.stderr)
        return USAGE_ERROR
    if result.truncated:
        print(f"krabby-replay: warning: {result.truncated}", file=sys.stderr)
    if args.out:
        np.savez(args.out, recorded=result.recorded, replayed=result.replayed, targets_rad=result.targets_rad)
    ok = result.max_abs_diff <= args.tolerance
    print(f"replayed {result.steps} steps: max |action difference| = {result.max_abs_diff:.3g} "
          f"({'OK' if ok else 'MISMATCH'}, tolerance {args.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
