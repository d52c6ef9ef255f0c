"""Keras (``.keras``, full-model ``.h5``, ``.weights.h5``), read with h5py alone.

``reader`` is the loader; ``h5``/``hdf5_probe`` open the file safely; ``config``/``tree`` read the
model config; ``layers``/``shapes``/``build``/``graph`` turn it into IR layers and the graph;
``writer`` writes clipped kernels back.
"""
