"""What a policy does on every course: distance, falls and goals per terrain over several seeds.

Runs the real sim-to-sim loop (``krabby-hal-server-mujoco --fast``: MuJoCo backend, HAL server,
inference client) once per (terrain, seed) and prints one markdown row per terrain. A fall respawns
the robot at the start (as the CLI does); distance adds up the progress of every episode.

    python bench/demo_policy_courses.py [--checkpoint PATH] [--seeds 0 1 2 3 4] [--duration 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from krabby.parkour.sim2sim import TERRAINS, main as sim2sim_main


def run_one(terrain: str, seed: int, duration_s: float, extra: list[str], out: Path) -> dict:
    summary = out / f"{terrain}_{seed}.json"
    with contextlib.redirect_stdout(io.StringIO()):  # the CLI's own per-run lines
        rc = sim2sim_main(["--terrain", terrain, "--seed", str(seed), "--duration", str(duration_s), "--fast", "--quiet",
                           "--summary", str(summary), *extra])
    if rc != 0:
        raise SystemExit(f"sim2sim failed on {terrain} seed {seed} (rc {rc})")
    return json.loads(summary.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="policy (default: the bundled demo policy)")
    ap.add_argument("--terrains", nargs="+", default=list(TERRAINS), choices=TERRAINS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--duration", type=float, default=20.0, help="simulated seconds per run")
    ap.add_argument("--speed", type=float, default=0.5, help="commanded forward speed, m/s")
    a = ap.parse_args()
    extra = ["--speed", str(a.speed)] + (["--checkpoint", a.checkpoint] if a.checkpoint else [])
    print(f"{a.duration:g} s per run at {a.speed:g} m/s, seeds {a.seeds}; distance = progress along the course, summed over respawns")
    print("| terrain | distance (m), mean [min, max] | falls per run (total) | goals per run, mean [min, max] | sim s / wall s |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for terrain in a.terrains:
            runs = [run_one(terrain, s, a.duration, extra, Path(tmp)) for s in a.seeds]
            d = [r["distance_m"] for r in runs]
            f = [r["falls"] for r in runs]
            g = [r["goals_reached"] for r in runs]
            rtf = sum(r["sim_time_s"] for r in runs) / sum(r["wall_time_s"] for r in runs)
            print(f"| {terrain} | {sum(d) / len(d):.2f} [{min(d):.2f}, {max(d):.2f}] | {' '.join(map(str, f))} ({sum(f)}) | "
                  f"{sum(g) / len(g):.1f} [{min(g)}, {max(g)}] | {rtf:.1f} |", flush=True)


if __name__ == "__main__":
    main()
