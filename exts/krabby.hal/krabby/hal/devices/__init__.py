"""Robot-side devices, one file each: the Go2 low-level bus (DDS), the ZED Mini depth camera, a CAN bus.

Every vendor SDK (cyclonedds, pyzed, python-can) is imported lazily inside the file that needs it,
so importing this package never requires hardware libraries.
"""
