"""The MCP transport (a package, one module per concern): the sidecar's Service, served to AI clients (official `mcp` SDK).

One `MCPServer` holds the tools, resources and prompt; every MCP connection
(the unix socket `<socket>.mcp` that `para mcp` pumps stdio into, or the
optional streamable HTTP endpoint) is served by it against the one `Service`
the JSON-RPC connections use, so every front end sees the same state and
events. Tools are thin: arguments (validated by pydantic from the signature)
become the msgspec params of `params.py`, the operation runs shielded from
request cancellation, the result goes back as structured output (`outputSchema` is the
JSON schema of its Struct in results.py), and a `ParaError` becomes an error result
(`isError`) whose text starts with the error's code name and says what to do, and whose
structured content is `{code, name, message, data}`. Para's argument names are accepted as
aliases, unknown ones refused.

The bridge sends one preamble line before the MCP byte stream:
`{"para_mcp": 1, "cwd": ..., "env": {...}}`; `cwd` is the default repository
of tools called without `repo`, `env` the client's PARA_* overrides.

This package is the only user of the SDK's private `_lowlevel_server` (serving a
connection over explicit streams has no public API in mcp 2.3; pinned <2.4) and of the
request session's `_connection` (resource updates outlive the subscribing request).
"""

from para_rpc.server.mcp.frontend import McpFrontend
from para_rpc.server.mcp.guide import GUIDE
from para_rpc.server.mcp.hints import error_result, error_text
from para_rpc.server.mcp.http import HttpServer
from para_rpc.server.mcp.tools import McpDispatchOut, output_schema

__all__ = ["GUIDE", "HttpServer", "McpDispatchOut", "McpFrontend", "error_result", "error_text", "output_schema"]
