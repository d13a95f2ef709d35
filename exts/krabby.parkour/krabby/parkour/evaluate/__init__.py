"""krabby-eval: robustness cards for a checkpoint in the MuJoCo sim-to-sim loop (docs/evaluation.md).

``grid`` says what to run (terrains x difficulties x seeds x perturbations sampled from the
training randomisation), ``runner`` runs the episodes (one process, all cores, or Ray tasks),
``report`` and ``plots`` write the results folder and compare two, ``cli`` is the command.
"""
