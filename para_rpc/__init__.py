"""para_rpc: parallel AI agents on one codebase, coordinated by one sidecar."""

__version__ = "0.1.0"

# Bumped whenever a method's params or result change incompatibly; the client
# and the sidecar compare it in the `para/hello` handshake.
PROTOCOL_VERSION = 1
