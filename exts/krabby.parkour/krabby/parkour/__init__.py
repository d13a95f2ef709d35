"""Parkour policy runtime: checkpoints, the training observation, and the inference client."""

# policy.py imports only numpy at import time (torch loads when a torch backend is used), so
# `import krabby.parkour` stays light enough for the ONNX-only and tooling paths.
from .policy import ParkourPolicy, PolicyLoadError, load_policy

__all__ = ["ParkourPolicy", "PolicyLoadError", "load_policy"]
