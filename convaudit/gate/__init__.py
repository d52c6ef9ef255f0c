"""The CI gate of ``convaudit check``: ``config`` reads the limits ([tool.convaudit]),
``findings`` turns measured values and limits into findings with stable codes, ``baseline``
suppresses known findings."""
