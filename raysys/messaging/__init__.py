"""Messages between actors: signed, short-lived, replay-protected envelopes (``Messenger``) and
the wire format of what they carry (``wire``: leases in an assignment).

Imports the foundation, ``signing`` and ``store``.
"""
