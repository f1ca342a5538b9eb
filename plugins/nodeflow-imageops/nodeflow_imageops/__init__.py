"""nodeflow-imageops: image operations for nodeflow's built-in ``Image`` socket type."""

__version__ = "0.1.0"
