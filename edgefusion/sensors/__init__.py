"""Sensors behind one protocol (base.Sensor); real drivers import their libraries lazily."""

from edgefusion.sensors.base import Sample, Sensor, SensorGone, SensorState

__all__ = ["Sample", "Sensor", "SensorGone", "SensorState"]
