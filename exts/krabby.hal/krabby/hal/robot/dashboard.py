"""Terminal dashboard of a running robot stack (rich): safety state, loop rates, latencies, joints.

``render(status)`` turns one status dict (``RobotStack.robot_status()`` plus the HAL's safety
state and the policy client's ``metrics()``) into a rich renderable; ``Dashboard`` refreshes it in
the terminal a few times per second. Without rich (or without a terminal) ``status_line`` gives a
one-line summary for the log instead. While the dashboard runs, log lines go into its log panel
(``LogPanel``) instead of the terminal, where they would garble the live view.
"""

from __future__ import annotations

import logging
import math
import sys
from collections import deque
from typing import Any, Callable, Dict, Optional, Sequence

_MODE_STYLE = {"DAMPING": "yellow", "STANDING_UP": "cyan", "STANDING": "cyan", "POLICY": "bold green", "ESTOP": "bold white on red",
               "LYING_DOWN": "cyan"}


class LogPanel(logging.Handler):
    """Collects log lines for the dashboard; ``attach()`` takes the root logger's terminal handlers' place."""

    def __init__(self, maxlen: int = 200, level: int = logging.WARNING):
        super().__init__(level)
        self.lines: deque = deque(maxlen=maxlen)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
        self._removed: list = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.extend(self.format(record).splitlines()[:3])
        except Exception:
            self.handleError(record)

    def attach(self) -> "LogPanel":
        root = logging.getLogger()
        self._removed = [h for h in root.handlers if getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
        for h in self._removed:
            root.removeHandler(h)
        root.addHandler(self)
        return self

    def detach(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        for h in self._removed:
            root.addHandler(h)
        self._removed = []


def _f(v: Any, fmt: str = "{:.1f}", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return fmt.format(v)


def status_line(s: Dict[str, Any]) -> str:
    r = s.get("robot", {})
    sup = r.get("supervisor", {})
    ll = r.get("lowlevel", {})
    pol = s.get("policy") or {}
    return (f"{sup.get('mode', '?')}{' DRY-RUN' if sup.get('dry_run') else ''} hal={s.get('hal_state', '?')} "
            f"lowcmd {_f(ll.get('write_rate_hz'), '{:.0f}')} Hz (late p99 {_f(ll.get('late_ms_p99'), '{:.2f}')} ms) "
            f"lowstate {_f(ll.get('state_rate_hz'), '{:.0f}')} Hz age {_f(ll.get('state_age_ms'), '{:.1f}')} ms "
            f"hal {_f(r.get('hal_tick_rate_hz'), '{:.0f}')} Hz policy {_f(pol.get('loop_rate_hz'), '{:.0f}')} Hz "
            f"compute {_f(pol.get('compute_ms_p50'), '{:.1f}')} ms obs-age {_f(pol.get('obs_age_ms_p50'), '{:.1f}')} ms "
            f"{sup.get('last_event', '')}")


def render(s: Dict[str, Any], joint_names: Sequence[str], joints: Optional[Dict[str, Sequence[float]]] = None,
           messages: Sequence[str] = (), log_lines: Sequence[str] = ()) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    r = s.get("robot", {})
    sup = r.get("supervisor", {})
    ll = r.get("lowlevel", {})
    cam = r.get("camera")
    pol = s.get("policy") or {}
    mode = sup.get("mode", "?")

    head = Text()
    head.append(f" {mode} ", style=_MODE_STYLE.get(mode, "white"))
    head.append("  DRY RUN: zero torque sent " if sup.get("dry_run") else "  TORQUE LIVE ", style="bold magenta" if sup.get("dry_run") else "bold red")
    head.append(f"  HAL {s.get('hal_state', '?')}  episode {sup.get('policy_episode', 0)}")
    if sup.get("estop_reason"):
        head.append(f"  e-stop {sup['estop_reason']}", style="red")
    head.append(f"\n last: {sup.get('last_event', '')}")
    head.append(f"\n roll {_f(math.degrees(sup['roll_rad']) if sup.get('roll_rad') is not None else None, '{:+.0f}')} deg"
                f"  pitch {_f(math.degrees(sup['pitch_rad']) if sup.get('pitch_rad') is not None else None, '{:+.0f}')} deg"
                f"  hottest motor {_f(sup.get('max_motor_temp_c'), '{:.0f}')} C"
                f"  keys fwd {_f(r.get('operator', {}).get('forward_m_s'), '{:+.1f}')} m/s yaw {_f(r.get('operator', {}).get('yaw_rad'), '{:+.2f}')} rad")
    nav, bat = r.get("navigation") or {}, r.get("battery") or {}
    feet = " ".join(f"{k}{'*' if v else '.'}" for k, v in (r.get("contacts") or {}).items())
    head.append(f"\n policy told fwd {_f(nav.get('forward_m_s'), '{:+.2f}')} m/s yaw {_f(nav.get('yaw_rad'), '{:+.2f}')} rad"
                f"  feet {feet or '-'}  battery {_f(bat.get('voltage_v'), '{:.1f}')} V {_f(bat.get('soc_pct'), '{:.0f}')} %"
                f"  policy errors {(pol.get('errors') or 0)} (supervisor {sup.get('counters', {}).get('policy_step_errors', 0)})")
    if sup.get("last_policy_error"):
        head.append(f"\n last policy error: {sup['last_policy_error']}", style="red")
    lost = r.get("operator", {}).get("remote_lost_s") or 0.0
    if lost > 1.0:
        head.append(f"\n REMOTE SILENT {lost:.0f} s", style="bold red")

    loops = Table(title="loops", expand=True)
    for c in ("loop", "rate Hz", "p50 / p99", "age / latency"):
        loops.add_column(c)
    loops.add_row("rt/lowcmd writer", _f(ll.get("write_rate_hz"), "{:.0f}"),
                  f"{_f(ll.get('write_period_ms_p50'), '{:.2f}')} / {_f(ll.get('write_period_ms_p99'), '{:.2f}')} ms",
                  f"late p50/p99/max {_f(ll.get('late_ms_p50'), '{:.2f}')}/{_f(ll.get('late_ms_p99'), '{:.2f}')}/"
                  f"{_f(ll.get('late_ms_max'), '{:.1f}')} ms  >1 ms {_f(ll.get('late_over_1ms_pct'), '{:.1f}')} %  "
                  f"{ll.get('rt_status', '')}")
    loops.add_row("rt/lowstate", _f(ll.get("state_rate_hz"), "{:.0f}"), "", f"age {_f(ll.get('state_age_ms'), '{:.1f}')} ms  crc err {ll.get('crc_errors', 0)}")
    loops.add_row("HAL tick", _f(r.get("hal_tick_rate_hz"), "{:.0f}"), "", f"errors {r.get('tick_errors', 0)}")
    loops.add_row("policy", _f(pol.get("loop_rate_hz"), "{:.0f}"),
                  f"compute {_f(pol.get('compute_ms_p50'), '{:.1f}')} / {_f(pol.get('compute_ms_p99'), '{:.1f}')} ms",
                  f"obs age {_f(pol.get('obs_age_ms_p50'), '{:.1f}')} / {_f(pol.get('obs_age_ms_p99'), '{:.1f}')} ms  ack {_f(pol.get('ack_rtt_ms_p50'), '{:.2f}')} ms")
    if cam:
        loops.add_row("camera", _f(cam.get("capture_rate_hz"), "{:.0f}"), f"reproject {_f(cam.get('reproject_ms_p50'), '{:.1f}')} ms",
                      f"frame age {_f(cam.get('frame_age_ms'), '{:.0f}')} ms")

    jt = Table(title="joints (robot order)", expand=True)
    for c in ("joint", "q rad", "target rad", "tau Nm", "temp C"):
        jt.add_column(c, justify="right")
    joints = joints or {}
    for i, n in enumerate(joint_names):
        def g(key: str, fmt: str) -> str:
            v = joints.get(key)
            return _f(float(v[i]), fmt) if v is not None and i < len(v) else "-"
        temp = g("temp_c", "{:.0f}")
        hot = joints.get("temp_c") is not None and float(joints["temp_c"][i]) >= 65
        jt.add_row(n.replace("_joint", ""), g("q", "{:+.2f}"), g("target", "{:+.2f}"), g("tau", "{:+.1f}"),
                   Text(temp, style="red" if hot else ""))

    keys = Text("space e-stop  c clear  t torque on  T dry run  s stand  a arm  d disarm  x damp  g lie down  w/z speed  "
                "j/l yaw  k zero  q quit", style="dim")
    msg = Text("\n".join(messages[-5:]))
    logs = Panel(Text("\n".join(list(log_lines)[-6:]) or "-", style="yellow"), title="log (warnings)")
    return Panel(Group(head, loops, jt, msg, logs, keys), title="krabby robot runner")


class Dashboard:
    """Live terminal view; ``run(get_status, stop_event)`` blocks until the event is set."""

    def __init__(self, joint_names: Sequence[str], refresh_hz: float = 4.0):
        self.joint_names = list(joint_names)
        self.refresh_hz = refresh_hz

    def run(self, get_view: Callable[[], tuple], stop: Any) -> None:
        from rich.live import Live

        panel = LogPanel().attach()  # log lines into the panel: printed under rich.Live they garble the view
        try:
            with Live(render(*get_view()[:1], self.joint_names), refresh_per_second=self.refresh_hz, screen=False) as live:
                while not stop.wait(1.0 / self.refresh_hz):
                    s, joints, messages = get_view()
                    live.update(render(s, self.joint_names, joints, messages, panel.lines))
        finally:
            panel.detach()
