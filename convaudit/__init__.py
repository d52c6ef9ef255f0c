"""convaudit: exact singular values of convolutional layers (Sedghi, Gupta & Long, ICLR 2019)."""

from __future__ import annotations

__version__ = "0.1.0"
