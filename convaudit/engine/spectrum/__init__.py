"""The full circular spectrum (MATH.md §1): every singular value by FFT + batched SVD.

``fourier``/``frequencies`` build the kernel's frequency blocks (stride aliases, dilation,
Hermitian half); ``circular`` runs the batched decompositions; ``dense`` is the dense-matrix
fallback for geometries the FFT does not cover exactly. Off the CPU the singular values come
from Hermitian eigenproblems (``routes``) solved in batches by the backend ``eigensolvers``
selects: cuSOLVER's batched routines through ``cusolver`` (ctypes) where available.
"""
