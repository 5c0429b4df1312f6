"""Transports of the sidecar: the process itself (sidecar.py) and its JSON-RPC
connections (lsp.py). They decode, call the service and encode; nothing more."""
