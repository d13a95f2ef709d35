"""The wire clock: UNIX epoch nanoseconds (CLOCK_REALTIME).

Capture stamps cross machines, so they use the epoch clock; the server's staleness check compares
a command's stamp with its *own* clock, and that stamp is one the server itself produced, so clock
skew between machines never enters that check (see docs/protocol.md, "Clocks").
"""

import time


def now_ns() -> int:
    return time.time_ns()


def age_s(stamp_ns: int, now: int | None = None) -> float:
    return ((now_ns() if now is None else now) - stamp_ns) * 1e-9
