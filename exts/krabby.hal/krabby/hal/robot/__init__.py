"""The robot runner: hardware backends, the robot-side safety supervisor, operator inputs, dashboard.

Nothing here imports Kit. Entry point: ``krabby.hal.robot.runner.main`` (``jetson/run.py``).
Note: this package composes ``krabby.parkour`` (the inference client) in ``runner.py`` only, lazily.
"""
