"""ONNX: read a model's convs into the IR (``reader``) and write clipped kernels back (``writer``).

``model`` opens the file safely (external data, size limits, subgraph depth); ``inputs`` fixes
the input shapes; ``subgraphs`` makes a scope of the main graph and of every If / Loop / Scan
body; ``weights`` resolves initializers and Constant nodes (outer scopes included); ``shapes``
infers tensor sizes in every scope, with onnxruntime (``inline`` runs a body once in the main
graph) where inference stops; ``layers``/``dense``/``padding`` turn nodes into IR layers;
``graph``/``graph_ops``/``patterns``/``topology`` build the graph for the network bound.
Submodules import each other directly, never this package face.
"""
