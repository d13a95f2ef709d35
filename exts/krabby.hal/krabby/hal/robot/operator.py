"""Operator inputs: the Unitree wireless remote (bits in LowState_), a gamepad, the keyboard.

Every source turns presses into the same named ``Action``s and stick positions into one velocity
command; the runner routes actions to the supervisors. Actions fire on the press edge only, so a
held button never repeats.

Unitree remote (``LowState_.wireless_remote``, 40 bytes; layout as unitree_rl_gym's
remote_controller.py decodes it): bytes 2..3 little-endian button bits R1=0 L1=1 START=2 SELECT=3
R2=4 L2=5 F1=6 F2=7 A=8 B=9 X=10 Y=11 UP=12 RIGHT=13 DOWN=14 LEFT=15; floats lx@4 rx@8 ry@12 ly@20.

| action | remote | keyboard | meaning |
|---|---|---|---|
| estop | SELECT, or L2+R2 | space | latched e-stop (damping) |
| clear_estop | L2+START | c | e-stop -> DAMPING |
| enable_torque | L1+R1+A | t | leave dry run (needs --live) |
| disable_torque | L1+R1+B | T | back to dry run |
| stand_up | L2+A | s | DAMPING -> soft stand-up |
| arm_policy | START | a | STANDING -> POLICY |
| disarm_policy | B | d | POLICY -> back to standing |
| damp | L2+B | x | -> DAMPING |
| lie_down | L2+DOWN | g | standing/walking -> sit down -> DAMPING |
| quit | - | q | leave the runner (damps first) |

Sticks: left stick up/down = forward speed, right stick left/right = yaw command. Keyboard: w/z
+-0.1 m/s, j/l yaw, k zero both.

Remote lost: like Unitree's own deploy code (unitree_sdk2 ``dds_wrapper/robots/go2/go2_sub.h``), a remote
that was seen and then sends 40 zero bytes is gone; ``remote_lost_s()`` says for how long, and the runner
stands the robot, then lies it down.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

log = logging.getLogger("krabby.hal.robot.operator")

ACTIONS = ("estop", "clear_estop", "enable_torque", "disable_torque", "stand_up", "arm_policy",
           "disarm_policy", "damp", "lie_down", "quit")

REMOTE_BUTTONS = ("R1", "L1", "START", "SELECT", "R2", "L2", "F1", "F2", "A", "B", "X", "Y", "UP", "RIGHT", "DOWN", "LEFT")
BUTTON_BIT = {name: i for i, name in enumerate(REMOTE_BUTTONS)}
#: header bytes of the simulated remote: Unitree's sources do not publish the real ones; only "all 40 bytes
#: zero = no remote" matters (go2_sub.h), so any non-zero value serves the rehearsal
REMOTE_HEAD = b"\x55\x51"

#: combos checked in this order; the first that matches a *newly completed* combo fires
REMOTE_COMBOS: Tuple[Tuple[Tuple[str, ...], str], ...] = (
    (("SELECT",), "estop"),
    (("L2", "R2"), "estop"),
    (("L2", "START"), "clear_estop"),
    (("L1", "R1", "A"), "enable_torque"),
    (("L1", "R1", "B"), "disable_torque"),
    (("L2", "A"), "stand_up"),
    (("L2", "B"), "damp"),
    (("L2", "DOWN"), "lie_down"),
    (("START",), "arm_policy"),
    (("B",), "disarm_policy"),
)

KEYMAP: Dict[str, str] = {
    " ": "estop", "c": "clear_estop", "t": "enable_torque", "T": "disable_torque", "s": "stand_up",
    "a": "arm_policy", "d": "disarm_policy", "x": "damp", "g": "lie_down", "q": "quit",
}


@dataclass
class RemoteState:
    buttons: int = 0
    lx: float = 0.0
    rx: float = 0.0
    ry: float = 0.0
    ly: float = 0.0

    def pressed(self, name: str) -> bool:
        return bool(self.buttons >> BUTTON_BIT[name] & 1)


def decode_wireless_remote(data: bytes) -> RemoteState:
    """Decode the 40-byte ``wireless_remote`` field of LowState_."""
    if len(data) < 24:
        return RemoteState()
    (keys,) = struct.unpack_from("<H", data, 2)
    lx, rx, ry = struct.unpack_from("<3f", data, 4)
    (ly,) = struct.unpack_from("<f", data, 20)
    return RemoteState(keys, lx, rx, ry, ly)


def encode_wireless_remote(buttons: Iterable[str] = (), lx: float = 0.0, rx: float = 0.0, ry: float = 0.0, ly: float = 0.0) -> bytes:
    """The inverse of ``decode_wireless_remote`` (used by the simulated Go2 node and tests)."""
    keys = 0
    for b in buttons:
        keys |= 1 << BUTTON_BIT[b]
    buf = bytearray(40)
    buf[0:2] = REMOTE_HEAD  # a connected remote never sends 40 zero bytes
    struct.pack_into("<H", buf, 2, keys)
    struct.pack_into("<3f", buf, 4, lx, rx, ry)
    struct.pack_into("<f", buf, 20, ly)
    return bytes(buf)


def _combo_action(pressed: set, newly: set) -> Optional[str]:
    for combo, action in REMOTE_COMBOS:
        if set(combo) <= pressed and set(combo) & newly:
            return action
    return None


@dataclass
class VelocityCommand:
    forward_m_s: float = 0.0
    yaw_rad: float = 0.0  # heading change commanded, fed as delta_yaw


class Operator:
    """Collects actions from every source and keeps one velocity command; thread-safe."""

    def __init__(self, max_forward_m_s: float = 1.0, max_yaw_rad: float = 0.8, stick_deadband: float = 0.1,
                 default_forward_m_s: float = 0.0):
        self.max_forward_m_s = max_forward_m_s
        self.max_yaw_rad = max_yaw_rad
        self.deadband = stick_deadband
        self._lock = threading.Lock()
        self._actions: List[Tuple[str, str]] = []
        self._vel = VelocityCommand(default_forward_m_s, 0.0)
        self._remote_buttons: set = set()
        self._remote_seen = False
        self._remote_live_s: Optional[float] = None  # monotonic time of the last non-zero remote frame
        self.log: List[str] = []
        self.handler: Optional[Callable[[str, str], None]] = None  # called at once for each action

    # ----------------------------------------------------------------------------------- actions
    def submit(self, action: str, source: str = "api") -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown operator action {action!r}; known: {', '.join(ACTIONS)}")
        log.info("operator: %s (%s)", action, source)
        h = self.handler
        if h is not None:
            h(action, source)
        else:
            with self._lock:
                self._actions.append((action, source))

    def drain(self) -> List[Tuple[str, str]]:
        with self._lock:
            out, self._actions = self._actions, []
        return out

    def velocity(self) -> VelocityCommand:
        with self._lock:
            return VelocityCommand(self._vel.forward_m_s, self._vel.yaw_rad)

    def set_velocity(self, forward_m_s: Optional[float] = None, yaw_rad: Optional[float] = None) -> None:
        with self._lock:
            if forward_m_s is not None:
                self._vel.forward_m_s = max(-self.max_forward_m_s, min(self.max_forward_m_s, forward_m_s))
            if yaw_rad is not None:
                self._vel.yaw_rad = max(-self.max_yaw_rad, min(self.max_yaw_rad, yaw_rad))

    def _stick(self, v: float) -> float:
        return 0.0 if abs(v) < self.deadband else max(-1.0, min(1.0, v))

    # ------------------------------------------------------------------------- unitree remote
    def on_remote(self, data: bytes) -> None:
        """Feed each LowState_.wireless_remote; fires actions on button press edges."""
        if any(data):
            self._remote_live_s = time.monotonic()
        r = decode_wireless_remote(data)
        pressed = {b for b in REMOTE_BUTTONS if r.pressed(b)}
        newly = pressed - self._remote_buttons
        self._remote_buttons = pressed
        if pressed or any(abs(v) > self.deadband for v in (r.ly, r.rx)):
            self._remote_seen = True
        if newly:
            action = _combo_action(pressed, newly)
            if action is not None:
                self.submit(action, "remote")
        if self._remote_seen:
            self.set_velocity(self._stick(r.ly) * self.max_forward_m_s, -self._stick(r.rx) * self.max_yaw_rad)

    def remote_lost_s(self) -> float:
        """Seconds since the remote last sent a non-zero frame (0 while it does, or if there never was one)."""
        t = self._remote_live_s
        return 0.0 if t is None else max(0.0, time.monotonic() - t)

    # ------------------------------------------------------------------------------ keyboard
    def on_key(self, ch: str) -> None:
        if ch in KEYMAP:
            self.submit(KEYMAP[ch], "keyboard")
            return
        v = self.velocity()
        if ch == "w":
            self.set_velocity(forward_m_s=v.forward_m_s + 0.1)
        elif ch == "z":
            self.set_velocity(forward_m_s=v.forward_m_s - 0.1)
        elif ch == "j":
            self.set_velocity(yaw_rad=v.yaw_rad + 0.1)
        elif ch == "l":
            self.set_velocity(yaw_rad=v.yaw_rad - 0.1)
        elif ch == "k":
            self.set_velocity(0.0, 0.0)


class KeyboardInput:
    """Reads single keys from a terminal in cbreak mode (no Enter needed); does nothing without a TTY."""

    def __init__(self, operator: Operator, stream=None):
        self.operator = operator
        self.stream = stream or sys.stdin
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._old = None

    def start(self) -> bool:
        if not hasattr(self.stream, "fileno") or not os.isatty(self.stream.fileno()):
            log.info("keyboard: stdin is not a terminal; keyboard control off")
            return False
        import termios
        import tty

        fd = self.stream.fileno()
        self._old = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._loop, name="krabby-keyboard", daemon=True)
        self._thread.start()
        return True

    def _loop(self) -> None:
        fd = self.stream.fileno()
        while not self._stop.is_set():
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                ch = os.read(fd, 1).decode(errors="ignore")
                if ch:
                    try:
                        self.operator.on_key(ch)
                    except Exception:
                        log.exception("keyboard action failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._old is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._old)
            self._old = None


@dataclass
class GamepadMap:
    """Linux joystick (js) button/axis numbers; defaults fit an Xbox-style pad under the xpad driver."""

    device: str = "/dev/input/js0"
    buttons: Tuple[Tuple[Tuple[int, ...], str], ...] = (
        ((6,), "estop"),  # BACK / SELECT
        ((4, 5, 7), "clear_estop"),  # LB + RB + START
        ((4, 5, 0), "stand_up"),  # LB + RB + A
        ((7,), "arm_policy"),  # START
        ((1,), "disarm_policy"),  # B
        ((4, 1), "damp"),  # LB + B
    )
    forward_axis: int = 1  # left stick vertical (up is negative)
    yaw_axis: int = 3  # right stick horizontal


class GamepadInput:
    """Reads /dev/input/js* directly (Linux joystick API, 8-byte events); standard library only."""

    EVENT = struct.Struct("<IhBB")  # time ms, value, type, number

    def __init__(self, operator: Operator, mapping: Optional[GamepadMap] = None):
        self.operator = operator
        self.map = mapping or GamepadMap()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pressed: set = set()

    def start(self) -> bool:
        if not os.path.exists(self.map.device):
            log.info("gamepad: %s not present; gamepad control off", self.map.device)
            return False
        self._thread = threading.Thread(target=self._loop, name="krabby-gamepad", daemon=True)
        self._thread.start()
        return True

    def handle_event(self, value: int, etype: int, number: int) -> None:
        etype &= ~0x80  # JS_EVENT_INIT
        if etype == 0x01:
            if value:
                newly = {number} - self._pressed
                self._pressed.add(number)
                for combo, action in self.map.buttons:
                    if set(combo) <= self._pressed and set(combo) & newly:
                        self.operator.submit(action, "gamepad")
                        break
            else:
                self._pressed.discard(number)
        elif etype == 0x02:
            v = value / 32767.0
            if number == self.map.forward_axis:
                self.operator.set_velocity(forward_m_s=-self.operator._stick(v) * self.operator.max_forward_m_s)
            elif number == self.map.yaw_axis:
                self.operator.set_velocity(yaw_rad=-self.operator._stick(v) * self.operator.max_yaw_rad)

    def _loop(self) -> None:
        try:
            fd = os.open(self.map.device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            log.warning("gamepad: cannot open %s: %s", self.map.device, e)
            return
        try:
            while not self._stop.is_set():
                r, _, _ = select.select([fd], [], [], 0.1)
                if not r:
                    continue
                try:
                    data = os.read(fd, self.EVENT.size * 32)
                except BlockingIOError:
                    continue
                except OSError:
                    log.warning("gamepad disconnected")
                    self.operator.submit("estop", "gamepad-lost") if self._pressed else None
                    return
                for i in range(0, len(data) - self.EVENT.size + 1, self.EVENT.size):
                    _, value, etype, number = self.EVENT.unpack_from(data, i)
                    self.handle_event(value, etype, number)
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def parse_script(text: str) -> List[Tuple[float, str]]:
    """``"1.0:stand_up,4.0:arm_policy"`` -> [(1.0, "stand_up"), (4.0, "arm_policy")] (seconds after start)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        t, _, action = item.partition(":")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} in script item {item!r}; known: {', '.join(ACTIONS)}")
        out.append((float(t), action))
    return sorted(out)


class ScriptedInput:
    """Timed actions (for rehearsals and CI): fires each (t, action) t seconds after start()."""

    def __init__(self, operator: Operator, script: Sequence[Tuple[float, str]]):
        self.operator = operator
        self.script = list(script)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        t0 = time.monotonic()

        def run() -> None:
            for t, action in self.script:
                if self._stop.wait(max(0.0, t0 + t - time.monotonic())):
                    return
                self.operator.submit(action, "script")

        self._thread = threading.Thread(target=run, name="krabby-script", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


__all__ = [
    "ACTIONS", "Operator", "KeyboardInput", "GamepadInput", "GamepadMap", "ScriptedInput", "VelocityCommand",
    "decode_wireless_remote", "encode_wireless_remote", "parse_script", "RemoteState",
]
