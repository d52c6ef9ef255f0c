"""PyTorch: state_dicts, training checkpoints, safetensors, TorchScript and ``torch.export``.

``reader`` is the loader; ``archive`` reads files without running their code (``unpickler``: the
restricted reader for checkpoints naming classes outside torch's weights-only allowlist;
``storages``: writing such files back by their storages' bytes); ``statedict`` and
``modules`` turn tensors and module trees into IR layers; ``arch``/``programs``/``graph``/
``calls``/``ops`` trace an architecture for geometry and the network graph; ``writer`` writes
clipped kernels back in the same format.
"""
