"""krabby-eval: a robustness card for a checkpoint, from many sim-to-sim episodes.

    krabby-eval                                   # the bundled demo policy, default grid
    krabby-eval model_1500.pt --terrains flat,hurdles --seeds 5 --duration 20 --out runs/eval
    krabby-eval model_1500.pt --perturb nominal,train --beyond 1.5     # past the training ranges
    krabby-eval model_1500.pt --grid my_grid.toml                      # your own grid
    krabby-eval A.pt B.pt                          # two checkpoints side by side, differences marked
    krabby-eval model.pt --backend torch,onnx      # one checkpoint under two runtimes
    krabby-eval runs/eval_a runs/eval_b            # compare two finished results folders
    krabby-eval model.pt --ray auto                # episodes as tasks on an existing Ray cluster

Each episode is the MuJoCo sim-to-sim loop of ``krabby-hal-server-mujoco --fast`` (same HAL,
observation builder, policy and action mapper), on one terrain, difficulty and course seed,
under one perturbation sampled from the training randomisation; it ends at the first fall.
Episodes run over all cores (spawned processes) or as Ray tasks; the results folder holds
the card, the table, every episode (JSON and CSV) and two plots (see ``report.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Optional

from .grid import NOMINAL, Grid, PerturbationRanges, load_grid_toml, training_ranges
from .report import compare_markdown, write_results
from .runner import JOINT_LIMIT_MARGIN_RAD, RayUnavailableError, run_tasks
from ..policy_formats import PolicyLoadError, default_backend


def build_parser() -> argparse.ArgumentParser:
    from ..sim2sim import TERRAINS

    ap = argparse.ArgumentParser(prog="krabby-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", metavar="CHECKPOINT_OR_RESULTS",
                    help="a checkpoint/export (default: the bundled demo policy), or a finished results folder; two compare")
    ap.add_argument("--backend", default=None,
                    help="inference runtime: torch, onnx, or torch,onnx to compare both (default: onnx for an ONNX export, else torch)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--terrains", default="flat,hurdles,steps", help=f"comma list of {', '.join(TERRAINS)}")
    ap.add_argument("--difficulties", default=None, help="comma list in [0, 1] (default: each preset's default)")
    ap.add_argument("--seeds", type=int, default=3, help="course seeds 0..N-1 per cell")
    ap.add_argument("--duration", type=float, default=20.0, help="simulated seconds per episode")
    ap.add_argument("--speed", type=float, default=0.5, help="commanded forward speed, m/s")
    ap.add_argument("--perturb", default="nominal,train",
                    help="comma list: nominal, train (the training ranges), train_xK (K times wider)")
    ap.add_argument("--beyond", type=float, default=None, metavar="K", help="also run train_xK (e.g. 1.5) to find where it breaks")
    ap.add_argument("--grid", metavar="TOML", help="your own grid (see exts/krabby.parkour/docs/evaluation.md)")
    ap.add_argument("--success-fraction", type=float, default=0.5,
                    help="success = no fall and the course completed or this fraction of speed x duration covered")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    ap.add_argument("--ray", metavar="ADDRESS", help="run episodes as Ray tasks: 'auto', ray://host:10001, or 'local'")
    ap.add_argument("--out", default="runs/eval", help="results folder (two candidates: OUT/<label> each, and OUT/compare.md)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _perturbations(names: str, beyond: Optional[float], train: PerturbationRanges) -> list[PerturbationRanges]:
    out = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name == "nominal":
            out.append(NOMINAL)
        elif name == "train":
            out.append(train)
        elif name.startswith("train_x"):
            out.append(train.scaled(float(name[len("train_x"):])))
        else:
            raise ValueError(f"unknown perturbation {name!r}: use nominal, train, train_xK, or a --grid file")
    if beyond is not None:
        out.append(train.scaled(beyond))
    return out


def _grid(args: argparse.Namespace, train: PerturbationRanges) -> Grid:
    difficulties: list[Optional[float]] = [None]
    if args.difficulties:
        difficulties = [float(d) for d in args.difficulties.split(",")]
    grid = Grid(terrains=[t.strip() for t in args.terrains.split(",") if t.strip()], difficulties=difficulties,
                seeds=list(range(args.seeds)), perturbations=_perturbations(args.perturb, args.beyond, train),
                duration_s=args.duration, speed_m_s=args.speed)
    if args.grid:
        grid = load_grid_toml(args.grid, grid, {"nominal": NOMINAL, "train": train})
    from ..sim2sim import TERRAINS

    bad = [t for t in grid.terrains if t not in TERRAINS]
    if bad:
        raise ValueError(f"unknown terrain(s) {bad}; known: {', '.join(TERRAINS)}")
    return grid


def _display_name(checkpoint: str) -> str:
    """The checkpoint relative to the checkout when inside it (cards are committed; no machine paths)."""
    from krabby.hal.robot_profile import config_dir

    p = Path(checkpoint).resolve()
    try:
        return str(p.relative_to(config_dir().parent.resolve()))
    except (ValueError, OSError):
        return p.name


def evaluate(checkpoint: str, backend: str, args: argparse.Namespace, out: Path) -> Path:
    """Run the grid for one checkpoint and backend; write the results folder; return it."""
    from .. import load_policy

    train, source = training_ranges(checkpoint)
    grid = _grid(args, train)
    kind = load_policy(checkpoint, device=args.device, backend=backend).kind  # fails early, with the loader's message
    tasks = grid.tasks(checkpoint, backend, args.device)
    workers = 1 if args.ray else max(1, min(args.workers, len(tasks)))
    records, wall_s, cores = run_tasks(tasks, workers=workers, ray_address=args.ray, success_fraction=args.success_fraction,
                                quiet=args.quiet, label=f"{Path(checkpoint).name} ({backend})")
    sim_s = sum(r["sim_time_s"] for r in records)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta: dict[str, Any] = {
        "checkpoint_name": _display_name(checkpoint), "backend": backend, "policy_kind": kind,
        "grid": {"terrains": grid.terrains, "difficulties": grid.difficulties, "seeds": grid.seeds,
                 "duration_s": grid.duration_s, "speed_m_s": grid.speed_m_s,
                 "perturbations": [dataclasses.asdict(p) for p in grid.perturbations]},
        "episodes": len(records), "success_fraction": args.success_fraction,
        "joint_limit_margin_rad": JOINT_LIMIT_MARGIN_RAD, "ranges_source": source,
        "throughput": {"sim_s": sim_s, "wall_s": wall_s, "workers": cores, "ray": args.ray,
                       "sim_s_per_wall_s": sim_s / wall_s, "sim_s_per_wall_s_per_core": sim_s / wall_s / cores,
                       "cpu_count": os.cpu_count(), "load_avg_1min_at_end": load,
                       "note": f"{os.cpu_count()} cores, load average {load:.1f} at the end"},
    }
    write_results(out, records, meta, plots=not args.no_plots)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    targets = args.targets
    if not targets:
        from ..cli import USAGE_ERROR, UsageError
        from ..sim2sim import resolve_checkpoint

        try:
            targets = [str(resolve_checkpoint(None, flag="checkpoint"))]
        except UsageError as e:
            print(f"krabby-eval: {e}", file=sys.stderr)
            return USAGE_ERROR
    backends = [b.strip() for b in (args.backend or "").split(",") if b.strip()]
    candidates: list[tuple[str, Optional[str]]] = []  # (path, backend or None for a finished results folder)
    for t in targets:
        if (Path(t) / "table.csv").is_file():
            candidates.append((t, None))
        else:
            candidates += [(t, b) for b in backends or [default_backend(t)]]
    if len(candidates) > 2:
        print(f"krabby-eval: {len(candidates)} candidates; give one, or two to compare", file=sys.stderr)
        return 2
    labels = [Path(p).stem if b is None else f"{Path(p).stem}-{b}" for p, b in candidates]
    if len(labels) == 2 and labels[0] == labels[1]:
        labels = [f"A-{labels[0]}", f"B-{labels[1]}"]
    out = Path(args.out)
    folders = []
    try:
        for (path, backend), label in zip(candidates, labels):
            if backend is None:
                folders.append(Path(path))
                continue
            folder = evaluate(path, backend, args, out if len(candidates) == 1 else out / label)
            folders.append(folder)
            print(f"{label}: {folder / 'card.md'}")
    except (PolicyLoadError, ValueError, FileNotFoundError, RayUnavailableError) as e:
        print(f"krabby-eval: {e}", file=sys.stderr)
        return 2
    if len(folders) == 1:
        print((folders[0] / "card.md").read_text())
        return 0
    text = compare_markdown(folders[0], folders[1], labels[0], labels[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(text)
    print(text)
    print(f"comparison: {out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
