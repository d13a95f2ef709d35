"""krabby-eval throughput: simulated seconds per wall second for 1 and 2 processes, the teacher in the loop.

Why: a robustness card is hundreds of episodes; the target on a 2-core machine is >= 20 simulated s
per wall s in total, scaling near-linearly with cores. Each row runs the same grid (the bundled
teacher, nominal, lock-step sim-to-sim through the HAL) through ``krabby.parkour.evaluate.runner``
as krabby-eval does, and reports:

- total: simulated s / wall s over the whole run, including spawning the workers and loading the
  policy in each (what a user waits for);
- steady: simulated s / the episodes' own wall time, per process (the loop's speed, start-up excluded);
- scaling: total with N processes / (N x total with 1).

The other helpers' jobs share this machine; the header prints the load average next to the numbers.

    python bench/eval_throughput.py [--episodes 4] [--duration 10] [--workers 1,2] [--backend onnx]
"""

from __future__ import annotations

import argparse
import os
import platform

from krabby.parkour.evaluate.grid import NOMINAL, Grid
from krabby.parkour.evaluate.runner import run_tasks
from krabby.parkour.cli import UsageError
from krabby.parkour.sim2sim import resolve_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=4, help="episodes per row (flat, seeds 0..N-1)")
    ap.add_argument("--duration", type=float, default=10.0, help="simulated seconds per episode")
    ap.add_argument("--workers", default="1,2", help="comma list of process counts")
    ap.add_argument("--backend", default="torch", help="inference runtime: torch or onnx")
    args = ap.parse_args()
    try:
        checkpoint = str(resolve_checkpoint(None, flag="checkpoint"))  # this bench always runs the bundled policy
    except UsageError as e:
        ap.exit(2, f"{ap.prog}: {e}\n")
    grid = Grid(["flat"], seeds=list(range(args.episodes)), perturbations=[NOMINAL], duration_s=args.duration)
    tasks = grid.tasks(checkpoint, args.backend)
    print(f"{checkpoint} (teacher, {args.backend}), {args.episodes} episodes x {args.duration:g} s, flat, nominal, lock-step")
    print(f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          "(other jobs share this machine)")
    header = f"{'processes':>9} {'sim s':>7} {'wall s':>7} {'total sim s/wall s':>19} {'per core':>9} {'steady per proc':>16} {'scaling':>8}"
    print(header)
    print("-" * len(header))
    single = None
    for n in [int(w) for w in args.workers.split(",")]:
        records, wall_s, cores = run_tasks(tasks, workers=n, ray_address=None, success_fraction=0.5, quiet=True)
        sim_s = sum(r["sim_time_s"] for r in records)
        steady = sim_s / sum(r["wall_time_s"] for r in records)
        total = sim_s / wall_s
        single = total if n == 1 else single
        scaling = f"{total / (n * single):.2f}" if single else "-"
        print(f"{n:>9} {sim_s:>7.0f} {wall_s:>7.1f} {total:>19.1f} {total / cores:>9.1f} {steady:>16.1f} {scaling:>8}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
