"""Reporters: render results as text or images; they return strings or write files, never print.

``spectrum``/``layers``: ``interface`` (formats, number formatting, ``renderer(fmt)``), ``table``
(rich), ``json`` (schema in ``schemas/report.schema.json``), ``csv``, ``plot`` (matplotlib, the
``plot`` extra). ``check``: ``check_*``, ``github``, ``junit``, ``sarif``.
"""
