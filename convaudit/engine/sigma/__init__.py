"""σ_max of a layer's REAL operator, always as a certified bracket [lower, upper] (MATH.md §2).

``methods`` picks the method for an operator; ``circular`` certifies the circular operator on a
grid (Gram matrices from ``gram_lags``, one Cholesky per frequency); ``continuous`` bounds it over
the continuous frequency torus (the size-independent S); ``padded`` handles zero/reflect/
replicate padding with ``lanczos`` on the real operator.
"""
