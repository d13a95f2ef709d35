"""The results folder of one evaluation, and the side-by-side comparison of two.

Files (all but run.json and card.md's timing line depend only on the grid and the checkpoint):

- ``episodes.json``: every episode record (with its sampled perturbation) and the run's metadata;
- ``episodes.csv``: the same records, one row each, without wall-clock time;
- ``table.csv``: per terrain, difficulty and perturbation: success rate, mean/min distance, falls,
  mean time to goal, speed-tracking error, torque and joint-limit saturation, safety events;
- ``card.md``: the robustness card (table + grid + ranges + throughput);
- ``success_vs_difficulty.svg``, ``distance.svg``: plots (``plots.py``);
- ``run.json``: throughput (simulated s per wall s, per core), workers, wall time.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

TABLE_COLUMNS = ("terrain", "difficulty", "perturbation", "episodes", "success_rate", "distance_mean_m", "distance_min_m",
                 "falls", "time_to_goal_mean_s", "speed_error_mean_m_s", "torque_sat_per_episode",
                 "joint_limit_per_episode", "clamped_per_episode", "safety_events")
EPISODE_COLUMNS = ("index", "terrain", "difficulty", "seed", "perturbation", "success", "distance_m", "fell", "fall_time_s",
                   "goals_reached", "num_goals", "course_complete", "time_to_goal_s", "speed_tracking_error_m_s",
                   "torque_saturation_joint_steps", "joint_limit_joint_steps", "safety_events", "watchdog_trips",
                   "clamped_commands", "commands_missed", "pushes", "base_mass_offset_kg", "base_com_offset_m",
                   "foot_friction", "motor_strength", "push_vel_m_s", "action_latency_steps", "depth_latency_frames",
                   "depth_noise_m")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _range(v: Any) -> str:
    """A range or value as the card prints it: (low, high) with 4 significant digits."""
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table_rows(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per (terrain, difficulty, perturbation), in first-seen order; values as fixed-precision text."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["terrain"], r["difficulty"], r["perturbation"])].append(r)
    rows = []
    for (terrain, difficulty, pert), rs in groups.items():
        n = len(rs)
        dist = [r["distance_m"] for r in rs]
        ttg = [r["time_to_goal_s"] for r in rs if r["time_to_goal_s"] is not None]
        rows.append({
            "terrain": terrain, "difficulty": _fmt(float(difficulty), 2), "perturbation": pert, "episodes": str(n),
            "success_rate": _fmt(sum(r["success"] for r in rs) / n, 2),
            "distance_mean_m": _fmt(sum(dist) / n, 2), "distance_min_m": _fmt(min(dist), 2),
            "falls": str(sum(r["fell"] for r in rs)),
            "time_to_goal_mean_s": _fmt(sum(ttg) / len(ttg), 2) if ttg else "-",
            "speed_error_mean_m_s": _fmt(sum(r["speed_tracking_error_m_s"] for r in rs) / n, 3),
            "torque_sat_per_episode": _fmt(sum(r["torque_saturation_joint_steps"] for r in rs) / n, 1),
            "joint_limit_per_episode": _fmt(sum(r["joint_limit_joint_steps"] for r in rs) / n, 1),
            "clamped_per_episode": _fmt(sum(r["clamped_commands"] for r in rs) / n, 1),
            "safety_events": str(sum(r["safety_events"] for r in rs)),
        })
    return rows


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, list) else ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def markdown_table(rows: list[dict[str, str]], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(out: Path, records: list[dict[str, Any]], meta: dict[str, Any], plots: bool = True) -> dict[str, Path]:
    """Write the folder; returns the paths by role."""
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(records)
    paths = {name: out / name for name in ("episodes.json", "episodes.csv", "table.csv", "card.md", "run.json")}
    paths["episodes.json"].write_text(json.dumps({"meta": meta, "episodes": records}, indent=1) + "\n")
    paths["episodes.csv"].write_text(_csv(records, EPISODE_COLUMNS))
    paths["table.csv"].write_text(_csv(rows, TABLE_COLUMNS))
    paths["run.json"].write_text(json.dumps(meta.get("throughput", {}), indent=1) + "\n")
    paths["card.md"].write_text(card_markdown(rows, meta))
    if plots:
        from .plots import distance_svg, success_svg

        paths["success_vs_difficulty.svg"] = out / "success_vs_difficulty.svg"
        paths["success_vs_difficulty.svg"].write_text(success_svg(records))
        paths["distance.svg"] = out / "distance.svg"
        paths["distance.svg"].write_text(distance_svg(records))
    return paths


def card_markdown(rows: list[dict[str, str]], meta: dict[str, Any]) -> str:
    g = meta["grid"]
    lines = [
        f"# Robustness card: {meta['checkpoint_name']} ({meta['backend']})", "",
        f"Checkpoint `{meta['checkpoint_name']}`, {meta['policy_kind']} policy, {meta['backend']} runtime; "
        f"MuJoCo sim-to-sim through the HAL (lock-step), {g['duration_s']:g} s per episode at "
        f"{g['speed_m_s']:g} m/s commanded, the episode ends at the first fall.", "",
        f"Grid: terrains {', '.join(g['terrains'])}; difficulties "
        f"{', '.join('preset default' if d is None else f'{d:g}' for d in g['difficulties'])}; seeds "
        f"{', '.join(str(s) for s in g['seeds'])}; perturbations {', '.join(p['name'] for p in g['perturbations'])} "
        f"({meta['episodes']} episodes).", "",
        f"Success: no fall, and the course completed or at least {meta['success_fraction']:g} x the commanded "
        f"distance covered. Counts are per episode: torque saturation = joint-steps at the DC-motor clip, "
        f"joint limit = joint-steps within {meta['joint_limit_margin_rad']:g} rad of a limit, clamped = commands "
        f"the safety supervisor clamped to the joint limits, safety events = its interventions (hold, damp, "
        f"e-stop, refusals).", "",
        markdown_table(rows),
        f"Training ranges from: {meta['ranges_source']}.", "",
    ]
    for p in g["perturbations"]:
        items = ", ".join(f"{k} {_range(v)}" for k, v in p.items() if k != "name")
        lines.append(f"- `{p['name']}`: {items}")
    t = meta.get("throughput")
    if t:
        lines += ["", f"Throughput: {t['sim_s_per_wall_s']:.1f} simulated s per wall s over {t['workers']} "
                      f"{'Ray CPUs' if t.get('ray') else 'processes'} ({t['sim_s_per_wall_s_per_core']:.1f} per core), "
                      f"{t['wall_s']:.0f} s wall; {t.get('note', '')}".rstrip("; ")]
    return "\n".join(lines) + "\n"


def read_table(folder: Path) -> list[dict[str, str]]:
    with open(folder / "table.csv", newline="") as f:
        return list(csv.DictReader(f))


def compare_markdown(a: Path, b: Path, label_a: Optional[str] = None, label_b: Optional[str] = None) -> str:
    """Two cards side by side: for each row and metric 'A | B', with differing cells marked by '◆'."""
    ta, tb = read_table(a), read_table(b)
    key = ("terrain", "difficulty", "perturbation")
    index_b = {tuple(r[k] for k in key): r for r in tb}
    metrics = [c for c in TABLE_COLUMNS if c not in key]
    la, lb = label_a or a.name, label_b or b.name
    lines = [f"# {la} (A) vs {lb} (B)", "", "Each cell is A / B; ◆ marks a difference.", "",
             "| " + " | ".join([*key, *metrics]) + " |", "|" + "---|" * (len(key) + len(metrics))]
    differing = 0
    seen = set()
    for ra in ta:
        k = tuple(ra[c] for c in key)
        seen.add(k)
        rb = index_b.get(k)
        cells = []
        for m in metrics:
            vb = "n/a" if rb is None else rb[m]
            mark = " ◆" if vb != ra[m] else ""
            differing += bool(mark)
            cells.append(f"{ra[m]} / {vb}{mark}")
        lines.append("| " + " | ".join([*k, *cells]) + " |")
    for rb in tb:
        k = tuple(rb[c] for c in key)
        if k not in seen:
            differing += 1
            lines.append("| " + " | ".join([*k, *(f"n/a / {rb[m]} ◆" for m in metrics)]) + " |")
    lines += ["", f"{differing} differing cells."]
    return "\n".join(lines) + "\n"
