"""value_problem's reduction fast path for a STATE gives the per-field rules' verdicts (NaN/inf in any one
element of any field, the all-NaN velocity rule, non-unit quaternions, finite float32 extremes)."""

import math

import numpy as np
import pytest

from krabby.hal.protocol import Kind, StateLayout, pack_state, unpack_state
from krabby.hal.telemetry_gate import value_problem
from krabby.hal.types import RobotState

LAYOUT = StateLayout(num_joints=12, num_feet=4)


def _vec() -> np.ndarray:
    rng = np.random.default_rng(0)
    state = RobotState(1, rng.normal(size=12), rng.normal(size=12), rng.normal(size=12), np.array([1.0, 0, 0, 0]),
                       rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.normal(size=4))
    return pack_state(state, LAYOUT)


def _cases():
    """(label, packed vector, the verdict the per-field rules give)."""
    sl = LAYOUT.slices()
    yield "nominal", _vec(), None
    for name, s in sl.items():
        for bad in (math.nan, math.inf, -math.inf):
            for i in (s.start, s.stop - 1):
                v = _vec()
                v[i] = bad
                yield f"{name}[{i}]={bad}", v, "non_finite"
    v = _vec()
    v[sl["base_lin_vel_body_m_s"]] = math.nan  # all three NaN: "unknown", allowed
    yield "velocity unknown", v, None
    v = _vec()
    v[sl["base_lin_vel_body_m_s"]] = [math.nan, math.nan, 0.0]
    yield "velocity partly NaN", v, "non_finite"
    v = _vec()
    v[sl["base_lin_vel_body_m_s"]] = [math.inf, math.nan, math.nan]
    yield "velocity inf beside NaN", v, "non_finite"
    v = _vec()
    v[sl["base_lin_vel_body_m_s"]] = math.nan
    v[sl["base_quat_wxyz"]] = [0.5, 0.5, 0.5, 0.6]
    yield "velocity unknown, quaternion not unit", v, "quaternion"
    v = _vec()
    v[sl["base_quat_wxyz"]] = [1.0, 0.0, 0.0, 0.05]
    yield "quaternion not unit", v, "quaternion"
    v = _vec()
    v[sl["base_quat_wxyz"]] = 0.0
    yield "quaternion zero", v, "quaternion"
    v = _vec()
    v[sl["joint_vel_rad_s"]] = np.finfo(np.float32).max  # a float32 sum would overflow; these are finite
    yield "float32 max everywhere in a field", v, None
    v = _vec()
    v[sl["joint_pos_rad"]] = [np.finfo(np.float32).max, -np.finfo(np.float32).max] * 6
    yield "opposite float32 extremes", v, None


@pytest.mark.parametrize("label,vec,expected", list(_cases()), ids=lambda x: x if isinstance(x, str) else "")
def test_fast_path_agrees_with_field_rules(label, vec, expected):
    assert value_problem(Kind.STATE, unpack_state(vec, 1, LAYOUT)) == expected, label
