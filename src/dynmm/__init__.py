"""dynmm: dynamic multimodal fusion that really skips the work it routes around."""

__version__ = "0.1.0"
