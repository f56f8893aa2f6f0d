"""Perception from the MSCS images: keypoint detection (drill tip, bregma and lambda)."""
