"""krabby-plot: a report (PNG files and one HTML page) from a run log.

    krabby-plot runs/latest                 # a run folder: reads log.mcap, writes plots/
    krabby-plot runs/x.mcap --out report/   # a log file anywhere
    krabby-plot runs/latest --replay        # also replay the log and plot the action difference

Pages: per-joint target vs measured position; torque against the profile's limits; loop period
and compute-time histograms with p50/p99; observation and depth age over time; the safety state
over time; the base trajectory over the course (simulator runs); with --replay, the largest
action difference per step. Everything is read from the log's Foxglove channels
(``krabby.parkour.foxglove_log``), so what the report shows is what Foxglove shows.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .cli import USAGE_ERROR, OneLineParser
from .foxglove_log import message_decoder
from .record import LogReadError, open_log

TOPICS = ("/joint_states", "/joint_targets", "/timing", "/safety", "/sim", "/navigation")


class RunData:
    """The channels a report needs, as arrays; times in seconds from the first message."""

    def __init__(self, log_path: Path):
        log = open_log(log_path, topics=TOPICS)
        self.truncated = log.truncated
        self.meta = log.metadata
        decoders: dict[str, Any] = {}
        rows: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for m in log.messages:
            if m.channel not in decoders:
                decoders[m.channel] = message_decoder(m.schema, m.channel_record)
            dec = decoders[m.channel]
            if dec is not None:
                rows[m.channel].append((m.log_time_ns, dec(m.data)))
        t0 = min((r[0][0] for r in rows.values() if r), default=0)
        self.t0_ns = t0
        self.rows = {k: ([(t - t0) * 1e-9 for t, _ in v], [m for _, m in v]) for k, v in rows.items()}
        welcome = json.loads(self.meta["welcome"]) if "welcome" in self.meta else {}
        self.profile = welcome.get("robot_profile")

    def joints(self, topic: str, field: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        t, msgs = self.rows.get(topic, ([], []))
        if not msgs:
            return np.zeros(0), [], np.zeros((0, 0))
        names = [j.name for j in msgs[0].joints]
        return np.asarray(t), names, np.array([[getattr(j, field) for j in m.joints] for m in msgs])

    def json_series(self, topic: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        t, msgs = self.rows.get(topic, ([], []))
        pairs = [(ti, m.get(key)) for ti, m in zip(t, msgs) if m.get(key) is not None]
        return np.asarray([p[0] for p in pairs]), np.asarray([p[1] for p in pairs], dtype=float)


def _pcts(v: np.ndarray) -> str:
    return f"p50 {np.percentile(v, 50):.2f} ms, p99 {np.percentile(v, 99):.2f} ms" if v.size else "no samples"


def effort_limits(profile: dict[str, Any] | None, names: list[str]) -> dict[str, float]:
    """Each joint's training torque limit, from the profile the HAL sent in its handshake."""
    if not profile:
        return {}
    from krabby.hal.robot_profile import profile_from_dict

    p = profile_from_dict(profile, origin="run log handshake")
    return {n: float(lim) for n, lim in zip(p.joint_names, p.effort_limit_nm)}


def make_report(run: RunData, out: Path, replay_diff: np.ndarray | None = None) -> list[tuple[str, str, str]]:
    """Write the PNGs into ``out``; returns (file, title, caption) per page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    pages: list[tuple[str, str, str]] = []

    def save(fig: Any, name: str, title: str, caption: str) -> None:
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        pages.append((name, title, caption))

    tq, names, q = run.joints("/joint_states", "position")
    tt, tnames, qt = run.joints("/joint_targets", "position")
    if names:
        fig, axes = plt.subplots(4, 3, figsize=(13, 10), sharex=True)
        for i, (ax, n) in enumerate(zip(axes.ravel(), names)):
            ax.plot(tq, q[:, i], lw=0.8, label="measured")
            if tnames:
                ax.plot(tt, qt[:, tnames.index(n)], lw=0.8, label="target")
            ax.set_title(n, fontsize=9)
            ax.set_ylabel("rad")
        axes[0, 0].legend(fontsize=8)
        for ax in axes[-1]:
            ax.set_xlabel("time (s)")
        save(fig, "joints.png", "Joint position: target vs measured", "robot order; target = command sent")
        _, _, tau = run.joints("/joint_states", "effort")
        limits = effort_limits(run.profile, names)
        fig, axes = plt.subplots(4, 3, figsize=(13, 10), sharex=True)
        for i, (ax, n) in enumerate(zip(axes.ravel(), names)):
            ax.plot(tq, tau[:, i], lw=0.8)
            if n in limits:
                for s in (-1, 1):
                    ax.axhline(s * limits[n], color="r", ls="--", lw=0.8)
            ax.set_title(f"{n} (peak {np.max(np.abs(tau[:, i])):.1f} N·m)", fontsize=9)
            ax.set_ylabel("N·m")
        save(fig, "torques.png", "Joint torque against the training limit (dashed)", "effort_limit_nm from the robot profile")
    _, period = run.json_series("/timing", "loop_period_ms")
    _, compute = run.json_series("/timing", "compute_ms")
    if compute.size:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, v, what in ((axes[0], period, "loop period"), (axes[1], compute, "compute time")):
            if v.size:
                ax.hist(v, bins=60)
                for q_, ls in ((50, "-"), (99, "--")):
                    ax.axvline(np.percentile(v, q_), color="k", ls=ls, lw=1, label=f"p{q_} {np.percentile(v, q_):.2f} ms")
                ax.legend()
            ax.set_title(f"{what}: {_pcts(v)}")
            ax.set_xlabel("ms")
        save(fig, "timing.png", "Control loop timing", f"loop period {_pcts(period)}; compute {_pcts(compute)}")
        ta, age = run.json_series("/timing", "obs_age_ms")
        td, dage = run.json_series("/timing", "depth_age_ms")
        fig, ax = plt.subplots(figsize=(12, 4))
        ax.plot(ta, age, lw=0.8, label="observation age")
        if dage.size:
            ax.plot(td, dage, lw=0.8, label="depth age")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("ms")
        ax.legend()
        save(fig, "ages.png", "Observation and depth age", f"observation age {_pcts(age)}; depth age {_pcts(dage)}")
    ts, safety = run.rows.get("/safety", ([], []))
    if safety:
        states = [s.get("state", "?") for s in safety]
        levels = ["ESTOP", "DAMP", "HOLD", "DISARMED", "ARMED", "ACTIVE"]
        levels += sorted(set(states) - set(levels))
        fig, ax = plt.subplots(figsize=(12, 3))
        ax.step(ts, [levels.index(s) for s in states], where="post")
        ax.set_yticks(range(len(levels)), levels)
        ax.set_xlabel("time (s)")
        save(fig, "safety.png", "Safety state", "from the HAL STATUS messages")
    _, sims = run.rows.get("/sim", ([], []))
    if sims:
        xy = np.array([s["base_pos_w_m"][:2] for s in sims])
        fig, ax = plt.subplots(figsize=(12, 4))
        ax.plot(xy[:, 0], xy[:, 1])
        ax.plot(*xy[0], "go", label="start")
        ax.plot(*xy[-1], "rs", label="end")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.legend()
        save(fig, "trajectory.png", "Base trajectory over the course",
             f"{sims[-1]['distance_m']:.2f} m in {sims[-1]['sim_time_s']:.1f} s, falls {sims[-1]['falls']}")
    if replay_diff is not None:
        fig, ax = plt.subplots(figsize=(12, 4))
        ax.semilogy(np.arange(len(replay_diff)), np.maximum(replay_diff, 1e-12))
        ax.set_xlabel("control step")
        ax.set_ylabel("max |recorded - replayed|")
        save(fig, "replay.png", "Replay: action difference per step", f"largest {float(np.max(replay_diff)):.3g}")
    return pages


def write_html(out: Path, pages: list[tuple[str, str, str]], title: str, notes: list[str]) -> Path:
    body = "".join(f"<h2>{html.escape(t)}</h2><p>{html.escape(c)}</p><img src='{n}' style='max-width:100%'>" for n, t, c in pages)
    note = "".join(f"<p><b>{html.escape(n)}</b></p>" for n in notes)
    (out / "index.html").write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
                                    f"<h1>{html.escape(title)}</h1>{note}{body}\n")
    return out / "index.html"


def resolve(run: str) -> tuple[Path, Path]:
    """(log file, default output folder) for a run folder or a log file."""
    p = Path(run)
    if p.is_dir():
        return p / "log.mcap", p / "plots"
    return p, p.with_name(p.stem + "_plots")


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="krabby-plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (runs/latest) or a run log (.mcap)")
    ap.add_argument("--out", help="folder for the report (default: RUN/plots, or LOG_plots/ beside a log file)")
    ap.add_argument("--replay", action="store_true", help="also replay the log and plot the action difference")
    ap.add_argument("--backend", choices=["torch", "onnx"], default=None,
                    help="inference runtime for --replay (default: the one recorded in the log)")
    args = ap.parse_args(argv)
    log_path, out = resolve(args.run)
    out = Path(args.out) if args.out else out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("krabby-plot: needs matplotlib: pip install 'krabby[plot]'", file=sys.stderr)
        return USAGE_ERROR
    try:
        run = RunData(log_path)
    except (OSError, LogReadError) as e:
        print(f"krabby-plot: {getattr(e, 'strerror', None) and f'{log_path}: {e.strerror}' or e}", file=sys.stderr)
        return USAGE_ERROR
    if not run.rows:
        print(f"krabby-plot: {log_path} has none of the channels a report needs ({', '.join(TOPICS)}); "
              "it was written before Krabby logged Foxglove channels: record the run again", file=sys.stderr)
        return USAGE_ERROR
    diff = None
    if args.replay:
        from .replay import replay

        r = replay(log_path, backend=args.backend)
        diff = np.max(np.abs(r.recorded - r.replayed), axis=1)
    notes = [run.truncated] if run.truncated else []
    pages = make_report(run, out, diff)
    index = write_html(out, pages, f"Krabby run {log_path}", notes)
    print(f"report: {index} ({len(pages)} plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
