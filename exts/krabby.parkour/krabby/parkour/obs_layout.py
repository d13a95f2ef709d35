"""The 753-float parkour observation: every slice, scale and schedule constant, named once.

This is the only module that writes indices of the observation vector as numbers
(spec ../shared/spec/parkour_policy.md §1, §2, §9). Everything else imports the names below, so
a layout mistake is fixed in one place and ``obs[10]`` never appears in other code.

All slices are plain ``slice`` objects over the LAST axis, so they work for a single observation
``obs[COMMAND_VX]`` and for a batch ``obs[..., COMMAND_VX]`` (numpy or torch). Single entries are
length-1 slices (they keep the axis); ``*_INDEX`` ints exist only where a scalar index is needed.

Layout (spec §1):

====================  =========  ==========================================================
name                  indices    content
====================  =========  ==========================================================
PROPRIO               0:53       current proprio ("obs_buf"), terms below
SCAN                  53:185     132 height samples clip(h - 0.3, -1, 1), x varies fastest
PRIV_EXPLICIT         185:194    2 * base lin vel (body frame), then 6 zeros
PRIV_LATENT           194:223    mass, CoM, friction, gain ratios (unused with history encoder)
HISTORY               223:753    10 x 53 past proprio, oldest first, delta yaws zeroed
====================  =========  ==========================================================

Proprio terms (absolute indices == indices inside PROPRIO, since PROPRIO starts at 0):
ang vel body 0:3 (x0.25), roll 3, pitch 4, zero 5, delta_yaw 6, delta_next_yaw 7, zeros 8:10,
forward speed command 10 (m/s, raw), env flags 11 (not flat) / 12 (flat), joint pos - default
13:25 (Isaac order), joint vel 25:37 (x0.05), last raw action 37:49, foot contacts 49:53
(FL, FR, RL, RR; +-0.5). The upstream inline comments are off by one from index 8 on; these are
the real indices (spec §1.1, §9.2).
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------- sizes
NUM_PROPRIO = 53
"""Proprio terms per control step (upstream ``num_prop``)."""
NUM_SCAN = 132
"""Height-scan samples: 12 (x) x 11 (y) (upstream ``num_scan``)."""
NUM_PRIV_EXPLICIT = 9
"""Explicit privileged block; the estimator predicts exactly these 9 (upstream ``num_priv_explicit``)."""
NUM_PRIV_LATENT = 29
"""Latent privileged block (upstream ``num_priv_latent``)."""
HISTORY_LENGTH = 10
"""Past proprio entries in the observation (upstream ``num_hist``)."""
OBS_DIM = NUM_PROPRIO + NUM_SCAN + NUM_PRIV_EXPLICIT + NUM_PRIV_LATENT + HISTORY_LENGTH * NUM_PROPRIO
"""753: the actor's and critic's input width."""
NUM_JOINTS = 12
"""Joint vectors in the observation (pos, vel, last action) are 12 long, Isaac Lab order."""
NUM_FEET = 4
"""Foot-contact entries, order FL, FR, RL, RR."""

# ---------------------------------------------------------------------------------------- blocks
PROPRIO = slice(0, NUM_PROPRIO)
SCAN = slice(PROPRIO.stop, PROPRIO.stop + NUM_SCAN)
PRIV_EXPLICIT = slice(SCAN.stop, SCAN.stop + NUM_PRIV_EXPLICIT)
PRIV_LATENT = slice(PRIV_EXPLICIT.stop, PRIV_EXPLICIT.stop + NUM_PRIV_LATENT)
HISTORY = slice(PRIV_LATENT.stop, PRIV_LATENT.stop + HISTORY_LENGTH * NUM_PROPRIO)

# --------------------------------------------------------------------------- proprio terms (0:53)
BASE_ANG_VEL = slice(0, 3)
"""Base angular velocity, BODY frame (gyro), rad/s x ANG_VEL_SCALE."""
ROLL = slice(3, 4)
"""Isaac Lab XYZ-Euler roll of the base quaternion, wrapped to (-pi, pi]."""
PITCH = slice(4, 5)
"""Isaac Lab XYZ-Euler pitch (asin, saturated at +-pi/2), wrapped to (-pi, pi]."""
ROLL_PITCH = slice(3, 5)
ZERO_5 = slice(5, 6)
"""Always 0 (upstream writes 0 x delta_yaw)."""
DELTA_YAW = slice(6, 7)
"""target_yaw - wrap_to_pi(yaw), NOT re-wrapped; refreshed every REFRESH_PERIOD_STEPS."""
DELTA_NEXT_YAW = slice(7, 8)
"""next_target_yaw - wrap_to_pi(yaw); same schedule as DELTA_YAW."""
DELTA_YAWS = slice(6, 8)
"""Both heading errors: zeroed in history entries and in the depth encoder's proprio, and
replaced by PREDICTED_YAW_SCALE * yaw_raw for the student actor."""
ZERO_8_10 = slice(8, 10)
"""Always 0 (upstream writes 0 x commands[0:2]); the command is NOT here (spec §9.2)."""
COMMAND_VX = slice(10, 11)
"""Commanded forward speed, m/s, raw (training range U(0.3, 0.8))."""
COMMAND_VX_TRAINED_M_S = (0.3, 0.8)
"""The range upstream samples the forward-speed command from (spec §1, index 10); outside it the policy extrapolates."""
ENV_NOT_FLAT = slice(11, 12)
"""1.0 unless the sub-terrain is 'parkour_flat'."""
ENV_FLAT = slice(12, 13)
"""1.0 on the 'parkour_flat' sub-terrain."""
ENV_FLAGS = slice(11, 13)
JOINT_POS = slice(13, 13 + NUM_JOINTS)
"""Joint position minus default, rad, Isaac Lab joint order."""
JOINT_VEL = slice(JOINT_POS.stop, JOINT_POS.stop + NUM_JOINTS)
"""Joint velocity, rad/s x JOINT_VEL_SCALE, Isaac Lab joint order."""
LAST_ACTION = slice(JOINT_VEL.stop, JOINT_VEL.stop + NUM_JOINTS)
"""Raw output of the previous policy call (before clip, before delay); 0 after reset."""
FOOT_CONTACT = slice(LAST_ACTION.stop, LAST_ACTION.stop + NUM_FEET)
"""float(contact now OR contact previous step) - 0.5, order FL, FR, RL, RR."""
ZERO_TERMS = (ZERO_5, ZERO_8_10)
"""Proprio entries that are always zero."""

# ------------------------------------------------------------------------ privileged sub-terms
PRIV_BASE_LIN_VEL = slice(PRIV_EXPLICIT.start, PRIV_EXPLICIT.start + 3)
"""Base linear velocity, body frame, m/s x BASE_LIN_VEL_SCALE."""
PRIV_EXPLICIT_ZEROS = slice(PRIV_BASE_LIN_VEL.stop, PRIV_EXPLICIT.stop)
"""Six zeros (two copies of 0 x velocity upstream)."""
PRIV_BASE_MASS = slice(PRIV_LATENT.start, PRIV_LATENT.start + 1)
"""Absolute base mass in kg (training only; unused by the history-encoder path)."""
PRIV_BASE_COM = slice(PRIV_BASE_MASS.stop, PRIV_BASE_MASS.stop + 3)
PRIV_FRICTION = slice(PRIV_BASE_COM.stop, PRIV_BASE_COM.stop + 1)
PRIV_STIFFNESS_RATIO = slice(PRIV_FRICTION.stop, PRIV_FRICTION.stop + NUM_JOINTS)
PRIV_DAMPING_RATIO = slice(PRIV_STIFFNESS_RATIO.stop, PRIV_STIFFNESS_RATIO.stop + NUM_JOINTS)


def history_entry(j: int) -> slice:
    """Slice of history entry j (0 = oldest, HISTORY_LENGTH - 1 = newest) in the full observation."""
    if not -HISTORY_LENGTH <= j < HISTORY_LENGTH:
        raise IndexError(f"history entry {j} out of range for length {HISTORY_LENGTH}")
    j %= HISTORY_LENGTH
    start = HISTORY.start + j * NUM_PROPRIO
    return slice(start, start + NUM_PROPRIO)


# ---------------------------------------------------------------------------------- scales
ANG_VEL_SCALE = 0.25
JOINT_POS_SCALE = 1.0
JOINT_VEL_SCALE = 0.05
BASE_LIN_VEL_SCALE = 2.0
CONTACT_ON = 0.5
CONTACT_OFF = -0.5
SCAN_HEIGHT_OFFSET_M = 0.3
"""Scan value = clip(base_z - hit_z - SCAN_HEIGHT_OFFSET_M, -SCAN_CLIP, SCAN_CLIP)."""
SCAN_CLIP = 1.0
OBS_CLIP = 100.0
"""Elementwise clip of all 753 entries, history included (spec §1.5)."""

# -------------------------------------------------------------------------------- schedule
REFRESH_PERIOD_STEPS = 5
"""delta yaws, height scan and the depth buffer refresh when the global step counter is a
multiple of this; the student's depth encoder (GRU) runs on exactly those steps."""
DEPTH_BUFFER_LEN = 2
"""The depth observation is buffer[-2]: the frame of the previous refresh (~100 ms latency)."""

# ----------------------------------------------------------------------------------- depth
DEPTH_CROP_TOP_PX = 0
DEPTH_CROP_BOTTOM_PX = 2
DEPTH_CROP_LEFT_PX = 4
DEPTH_CROP_RIGHT_PX = 4
"""Crop of the raw (60, 106) distance image to (58, 98) (spec §2 step 2)."""
DEPTH_HEIGHT_PX = 58
DEPTH_WIDTH_PX = 87
"""Bicubic (antialias) resize target: the depth encoder's input is (58, 87)."""
DEPTH_NORMALISE_OFFSET = 0.5
"""Normalised depth = distance / max_distance - DEPTH_NORMALISE_OFFSET."""

# ----------------------------------------------------------------- depth-encoder output (34)
DEPTH_ENCODER_OUT_DIM = 34
ENCODER_DEPTH_LATENT = slice(0, 32)
"""out[0:32]: the student's scandots_latent."""
ENCODER_YAW = slice(32, 34)
"""out[32:34]: tanh yaw; obs[DELTA_YAWS] <- PREDICTED_YAW_SCALE * yaw for the actor."""
PREDICTED_YAW_SCALE = 1.5


def term_names() -> tuple[str, ...]:
    """A human-readable name for each of the 753 entries (plots, recordings, error messages)."""
    joints = [f"j{i}" for i in range(NUM_JOINTS)]
    feet = ["FL", "FR", "RL", "RR"]
    proprio = (
        ["ang_vel_x_body", "ang_vel_y_body", "ang_vel_z_body", "roll", "pitch", "zero_5", "delta_yaw",
         "delta_next_yaw", "zero_8", "zero_9", "command_vx", "env_not_flat", "env_flat"]
        + [f"joint_pos_{j}" for j in joints]
        + [f"joint_vel_{j}" for j in joints]
        + [f"last_action_{j}" for j in joints]
        + [f"contact_{f}" for f in feet]
    )
    names = list(proprio)
    names += [f"scan_{k}" for k in range(NUM_SCAN)]
    names += ["priv_lin_vel_x", "priv_lin_vel_y", "priv_lin_vel_z"] + [f"priv_zero_{k}" for k in range(6)]
    names += (["priv_mass", "priv_com_x", "priv_com_y", "priv_com_z", "priv_friction"]
              + [f"priv_stiffness_{j}" for j in joints] + [f"priv_damping_{j}" for j in joints])
    for j in range(HISTORY_LENGTH):
        names += [f"hist{j}_{n}" for n in proprio]
    return tuple(names)


def _check_layout() -> None:
    """Fail at import if the blocks do not tile 0..OBS_DIM exactly."""
    blocks = (PROPRIO, SCAN, PRIV_EXPLICIT, PRIV_LATENT, HISTORY)
    for a, b in zip(blocks, blocks[1:]):
        if a.stop != b.start:
            raise AssertionError(f"observation blocks {a} and {b} are not contiguous")
    if HISTORY.stop != OBS_DIM or OBS_DIM != 753:
        raise AssertionError(f"observation layout ends at {HISTORY.stop}, expected 753")
    if FOOT_CONTACT.stop != NUM_PROPRIO or PRIV_DAMPING_RATIO.stop != PRIV_LATENT.stop:
        raise AssertionError("proprio or priv_latent terms do not fill their block")


_check_layout()
