"""Everything that runs the HAL on Isaac Sim or Isaac Lab, written so it imports no omni/isaaclab/torch at import time.

- ``main.py``: ``krabby-hal-server-isaac``, serves an Isaac Lab env through the HAL (launches the app first,
  Isaac Lab's rule, then imports it); ``env_backend.py``: the env as a HalBackend;
- ``stepper.py``: the physics-step driver (training PD at the physics rate, telemetry each control step);
- ``articulation.py``: the Isaac Sim articulation as a HalBackend, with IMU and navigation models;
- ``ext_settings.py`` / ``panel_model.py``: the Kit extensions' settings and panel view-models.

``krabby.hal.kit`` is the thin Kit shell around these: the only package that imports omni/carb/pxr/isaacsim.
"""
