"""Tools that exercise the HAL from outside, none needed at run time.

- ``demo.py``: ``krabby-hal-demo``, the HAL round trip on the loopback test double (checks an install or a tcp link);
- ``fuzz_mutations.py`` / ``fuzz_targets.py``: structure-aware message mutators and the fuzz harnesses with invariants;
- ``faults.py``: a lossy/delaying tcp proxy and process killers for fault-injection tests.
"""
