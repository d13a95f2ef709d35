"""Krabby HAL: robot state and depth out, joint commands in, over ZeroMQ, with a safety supervisor."""

__version__ = "0.1.0"
