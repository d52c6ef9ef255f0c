"""ONNX: read a model's convs into the IR (``reader``) and write clipped kernels back (``writer``).

``model`` opens the file safely (external data, size limits); ``weights`` resolves initializers
and Constant nodes; ``shapes`` infers input sizes; ``layers``/``dense``/``padding`` turn nodes
into IR layers; ``graph``/``graph_ops``/``patterns``/``topology`` build the graph for the network
bound. Submodules import each other directly, never this package face.
"""
