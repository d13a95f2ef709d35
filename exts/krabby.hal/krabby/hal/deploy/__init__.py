"""How one installation is wired and secured: deployment profiles, CURVE keys and the ZAP allow-list.

- ``profile.py``: deployment profiles (``config/deploy/*.toml``), the one reader of that format;
- ``robot_sections.py``: the robot runner's own sections of a profile ([dds], [zed], [supervisor], [operator]);
- ``keys.py``: key files and the allow-list directory; ``curve.py``: CURVE + ZAP on the HAL's tcp sockets;
- ``keys_cli.py``: ``krabby-keys``. docs/security.md has the threat model.
"""
