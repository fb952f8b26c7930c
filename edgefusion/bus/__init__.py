"""Results on the robot's bus: a Zenoh sink (the transport of ROS 2's rmw_zenoh) and its key space.

Nothing here imports zenoh at import time: the sink and ``edgefusion listen`` import it when they
open a session, so ``import edgefusion`` works on a robot without it.
"""
