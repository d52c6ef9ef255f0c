"""The network's Lipschitz bound: ``graph`` propagates certified per-layer bounds through the
model graph with the op ``rules``; ``empirical`` (and ``empirical_runtime``, which runs the model)
search for a lower bound to compare with."""
