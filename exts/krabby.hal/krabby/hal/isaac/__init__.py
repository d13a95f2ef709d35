"""Isaac Lab side of krabby.hal: ``krabby-hal-server-isaac`` serves an Isaac Lab env through the HAL.

Nothing here imports isaaclab, omni or torch at import time: ``main()`` launches the app first
(Isaac Lab's rule), then imports them. The argument handling and unit conversions are pure.
"""
