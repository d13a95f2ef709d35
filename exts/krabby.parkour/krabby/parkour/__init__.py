"""Parkour policy runtime: checkpoints, the training observation, and the inference client."""
