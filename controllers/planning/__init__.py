"""Milling trajectory planner (paper section IV-B): per-point descent with a multimodal velocity
damper on the perceived completion levels, smoothed by a closed constrained cubic spline, and
the stop logic. Never imports ``twin``."""
from controllers.planning.planner import DamperParams, MillingPlanner, StopMonitor, StopReason
from controllers.planning.spline import ClosedConstrainedSpline, closed_kruger_slopes
from controllers.planning.validation import PlanningParameterError

__all__ = ["ClosedConstrainedSpline", "DamperParams", "MillingPlanner", "PlanningParameterError",
           "StopMonitor", "StopReason", "closed_kruger_slopes"]
