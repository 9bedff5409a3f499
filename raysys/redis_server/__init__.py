"""Redis servers and connections: the embedded server (binary discovery, its state in the data
dir, start/attach/stop) and connecting to any Redis with the configured auth and TLS.

``connect_redis`` turns settings into a checked client with one clear error per failure;
``attach_or_start`` gives the URL of the data dir's embedded server, starting it if needed.
Imports only the foundation (errors, config).
"""
