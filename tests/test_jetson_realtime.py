"""The 500 Hz rt/lowcmd writer: SCHED_FIFO / pinning where permitted, a loud fallback where not, jitter measured."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from conftest import REPO

pytest.importorskip("cyclonedds", reason="cyclonedds not installed (pip install cyclonedds==11.0.1)")

sys.path.insert(0, str(REPO / "bench"))
from lowcmd_writer_jitter import measure  # noqa: E402


def run_writer(profile, seconds=1.0, **cfg):
    return measure(seconds, **cfg)  # the benchmark's own measurement (bench/lowcmd_writer_jitter.py)


def _fifo_permitted() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def test_writer_runs_sched_fifo_pinned_where_permitted(profile):
    if not _fifo_permitted():
        pytest.skip("SCHED_FIFO is not permitted here (the fallback is tested below)")
    st = run_writer(profile, rt_priority=10, cpu_affinity=[0])
    assert st["rt_status"].startswith("SCHED_FIFO 10") and "cores [0]" in st["rt_status"]
    assert st["write_rate_hz"] > 400
    for k in ("late_ms_p50", "late_ms_p99", "late_ms_max", "late_over_1ms_pct"):
        assert st[k] == st[k] and st[k] >= 0, (k, st[k])  # measured, not NaN
    assert st["late_ms_p50"] <= st["late_ms_p99"] <= st["late_ms_max"]


def test_a_refused_real_time_request_falls_back_with_a_warning(profile, caplog):
    with caplog.at_level(logging.WARNING, logger="krabby.hal.devices.go2_lowlevel"):
        st = run_writer(profile, rt_priority=1000)  # no such priority: refused everywhere (EINVAL)
    assert st["rt_status"].startswith("normal priority (SCHED_FIFO refused")
    assert "SCHED_FIFO refused" in caplog.text
    assert st["write_rate_hz"] > 400  # the writer keeps its 500 Hz
