"""Simulation parts of the MuJoCo backend: the Go2 model generator, parkour courses and the training sensor models.

Imports mujoco lazily (inside functions), so importing this package works without mujoco installed.
"""
