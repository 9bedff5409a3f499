"""Integrity: signed envelopes, the keyring (key ids, rotation, revocation), where keys come from,
and the development certificates for Redis TLS and Ray mTLS.

``Sealer`` seals and opens the envelope every record, result, snapshot manifest and message
uses; ``Keyring``/``SigningKey`` hold the keys (never stored in Redis); ``KeyringSource``
reloads a keyring file when it changes. Imports only the foundation (errors, config).
"""

from raysys.signing.envelope import Opened, Sealer
from raysys.signing.keyring import Keyring, SigningKey, generate_key
from raysys.signing.keysource import KeyringSource

__all__ = ["Keyring", "KeyringSource", "Opened", "Sealer", "SigningKey", "generate_key"]
