"""The robot runner's HAL side: hardware backends, the robot-side safety supervisor, operator inputs, dashboard.

Nothing here imports Kit or krabby.parkour. ``runner.RobotStack`` composes the robot HAL server;
the entry point that adds the inference client is ``krabby.parkour.jetson:main`` (``jetson/run.py``,
console script ``krabby-hal-server-jetson``).
"""
