"""nodeflow-sweep: parameter sweeps (CFG scales, seeds) that share everything upstream."""

__version__ = "0.1.0"
