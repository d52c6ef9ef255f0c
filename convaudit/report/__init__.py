"""Reporters: render results as text or images; they return strings or write files, never print.

``formats`` maps each output format to its reporter; ``interface`` holds what they share (render
options, number formatting). ``spectrum``/``layers``: ``table`` (rich), ``json`` (schema in
``schemas/report.schema.json``), ``csv``, ``plot`` (matplotlib, the ``plot`` extra). ``check``:
``check_table``, ``check_json``, ``github``, ``junit``, ``sarif``, with ``check_common``.
"""
