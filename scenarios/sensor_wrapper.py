"""The base of the scenarios' completion-sensor wrappers (scoring, fault injection, logging, crop
recording): each passes readings through ``estimate`` and forwards the rest of what the milling
loop asks of a sensor to the sensor it wraps."""
from __future__ import annotations


class CompletionSensorWrapper:
    """Wraps ``sensor`` (a completion sensor, or another wrapper): ``uses_images`` and
    ``last_thickness_m`` (m, (n,), or None for a completion-only sensor) are the wrapped sensor's.
    Subclasses define ``estimate``."""

    def __init__(self, sensor):
        self.sensor = sensor
        self.uses_images = sensor.uses_images

    @property
    def last_thickness_m(self):
        """The wrapped sensor's ``last_thickness_m`` (m, or None), unchanged."""
        return self.sensor.last_thickness_m
