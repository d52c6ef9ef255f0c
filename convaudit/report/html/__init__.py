"""The html report: one self-contained page (no network, no CDN) for ``spectrum`` and ``check``.

``page`` builds the document (inline CSS and JS from ``assets/``, a Content-Security-Policy that
lets only those two run, nothing load); ``svg`` draws the figures as inline SVG; ``spectrum``
and ``check`` render their reports. Every element is built with :mod:`xml.etree.ElementTree`,
whose serializer escapes all text and attribute values: a layer name from the model (untrusted)
can never become markup or script. The output is deterministic: no timestamps, fixed number
formatting, and the same report gives the same bytes.
"""
