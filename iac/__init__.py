"""IAC-LTH: Implantable Adaptive Cells searched with early, stability-driven pruning."""

__version__ = "0.1.0"
