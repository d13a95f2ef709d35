"""How fast the MuJoCo backend simulates: simulated seconds per wall second, and what each part costs.

Runs the backend's control loop (read, apply, step_control) with the robot holding its default
pose, for each sensor combination, and prints the speed and each part's share of the full loop's
wall time. Parts: physics (4 physics steps with the training PD in Python), the read() of joint
and IMU state plus navigation, the height scan (one mj_multiRay of 132 rays per scan, at the profile's 10 Hz) and
the depth camera (one mj_multiRay of 6,360 rays every 5 control steps).

Then it runs the whole sim-to-sim loop (HAL server, inference client and the bundled policy,
lock-step) and splits its wall time into physics, sensors, policy and the HAL with its threads.

    python bench/mujoco_sim.py [--terrain parkour] [--seconds 20] [--repeats 3] [--no-loop]
"""

from __future__ import annotations

import argparse
import time

from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig


def run(terrain: str, seconds: float, scan: bool, depth: bool, read: bool, repeats: int) -> float:
    """Best-of-repeats simulated seconds per wall second."""
    cfg = MujocoBackendConfig(terrain=terrain, seed=0, enable_height_scan=scan, enable_depth=depth)
    backend = MujocoBackend(cfg)
    backend.connect()
    steps = int(round(seconds / backend.profile.control_dt_s))
    cmd = backend.default_pose_command()
    best = 0.0
    for _ in range(repeats):
        backend.reset()
        t0 = time.perf_counter()
        for _ in range(steps):
            if read:
                backend.read()
            backend.apply(cmd)
            backend.step_control()
        wall = time.perf_counter() - t0
        best = max(best, backend.sim_time_s / wall)
    backend.disconnect()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--terrain", default="parkour", help="course preset (default parkour)")
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per case; the fastest counts")
    ap.add_argument("--no-loop", dest="loop", action="store_false", help="skip the whole-loop run with HAL and policy")
    a = ap.parse_args()

    cases = [
        ("physics alone", False, False, False),
        ("physics + state read", False, False, True),
        ("physics + height scan", True, False, True),
        ("physics + depth", False, True, True),
        ("everything", True, True, True),
    ]
    speed = {name: run(a.terrain, a.seconds, s, d, r, a.repeats) for name, s, d, r in cases}
    # wall seconds per simulated second of each case; differences give each part's cost
    cost = {k: 1.0 / v for k, v in speed.items()}
    parts = {
        "physics (PD + mj_step)": cost["physics alone"],
        "state read + navigation": cost["physics + state read"] - cost["physics alone"],
        "height scan": cost["physics + height scan"] - cost["physics + state read"],
        "depth camera": cost["physics + depth"] - cost["physics + state read"],
    }
    total = cost["everything"]
    print(f"MuJoCo backend, terrain {a.terrain!r}, {a.seconds:g} s simulated, best of {a.repeats}")
    print(f"{'case':<26}{'sim s / wall s':>16}")
    for k, v in speed.items():
        print(f"{k:<26}{v:>16.1f}")
    print(f"\n{'part of everything':<26}{'ms per sim s':>16}{'share':>9}")
    for k, v in parts.items():
        print(f"{k:<26}{1e3 * v:>16.2f}{100 * v / total:>8.1f}%")
    print(f"{'(sum of parts)':<26}{1e3 * sum(parts.values()):>16.2f}{100 * sum(parts.values()) / total:>8.1f}%")
    if a.loop:
        whole_loop(a, total, parts)


def whole_loop(a: argparse.Namespace, backend_cost: float, parts: dict[str, float]) -> None:
    """The full sim-to-sim loop (krabby-hal-server-mujoco --fast): backend + HAL + inference client + policy."""
    from krabby.parkour.sim2sim import build_parser, run as run_loop

    args = build_parser().parse_args(["--terrain", a.terrain, "--duration", str(a.seconds), "--fast", "--quiet"])
    summary = run_loop(args)
    loop_cost = 1.0 / summary["realtime_factor"]  # wall s per sim s
    backend_cost = backend_cost - parts["depth camera"]
    policy = summary["compute_ms_p50"] * 1e-3 * summary["commands_accepted"] / summary["sim_time_s"]
    from pathlib import Path

    print(f"\nwhole loop ({Path(summary['checkpoint']).parent.name}, --fast; a teacher reads the scan, not depth): "
          f"{summary['realtime_factor']:.1f} sim s / wall s")
    print(f"{'part of the whole loop':<26}{'ms per sim s':>16}{'share':>9}")
    rows = {**{k: v for k, v in parts.items() if k != "depth camera"}, "policy (build+infer+map)": policy,
            "HAL + threads (the rest)": loop_cost - backend_cost - policy}
    for k, v in rows.items():
        print(f"{k:<26}{1e3 * v:>16.2f}{100 * v / loop_cost:>8.1f}%")


if __name__ == "__main__":
    main()
