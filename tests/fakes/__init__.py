"""Test fakes (named as such): stand-ins for software that cannot be installed here (Kit, Isaac Sim, Isaac Lab)."""
