"""Every way the runner can end is turned into a damped stop: signals and uncaught thread exceptions.

systemd stop, docker stop and ``kill`` send SIGTERM, an ssh drop sends SIGHUP, Ctrl-C SIGINT. Each one,
and an exception that escapes any thread, calls ``on_stop(reason)``; the runner then damps the motors
and keeps the 500 Hz writer sending damping frames for ``SupervisorConfig.shutdown_damp_s`` before it
exits (``RobotStack.stop``). Only SIGKILL (and power loss) cannot be caught: the robot then gets no
further LowCmd_ at all.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable, Dict

log = logging.getLogger("krabby.hal.robot.shutdown")

SIGNAL_NAMES = ("SIGTERM", "SIGINT", "SIGHUP")


class ShutdownHooks:
    """``install()`` from the main thread; ``uninstall()`` restores the previous handlers."""

    def __init__(self, on_stop: Callable[[str], None]):
        self.on_stop = on_stop
        self._old_signals: Dict[int, Any] = {}
        self._old_thread_hook: Any = None
        self.reasons: list = []

    def _stop(self, reason: str) -> None:
        self.reasons.append(reason)
        try:
            self.on_stop(reason)
        except Exception:  # the stop request must never raise back into a signal frame
            log.exception("stop request failed")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        log.warning("%s received: damping, then stopping", name)
        # not in the handler itself: it runs in the main thread, which may hold the supervisor's lock right now
        threading.Thread(target=self._stop, args=(f"({name})",), name="krabby-signal-stop", daemon=True).start()

    def _on_thread_exception(self, args: Any) -> None:
        name = args.thread.name if args.thread is not None else "?"
        log.critical("uncaught %s in thread %s: damping, then stopping", args.exc_type.__name__, name,
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        self._stop(f"(uncaught {args.exc_type.__name__} in thread {name})")

    def install(self) -> "ShutdownHooks":
        for n in SIGNAL_NAMES:
            sig = getattr(signal, n, None)
            if sig is not None:
                self._old_signals[sig] = signal.signal(sig, self._on_signal)
        self._old_thread_hook = threading.excepthook
        threading.excepthook = self._on_thread_exception
        return self

    def uninstall(self) -> None:
        for sig, old in self._old_signals.items():
            signal.signal(sig, old)
        self._old_signals.clear()
        if self._old_thread_hook is not None:
            threading.excepthook = self._old_thread_hook
            self._old_thread_hook = None


__all__ = ["ShutdownHooks", "SIGNAL_NAMES"]
