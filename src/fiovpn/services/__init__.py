"""Services: compose the core and the adapters into what users ask for.

The CLI and the MCP server are thin front ends over these, never over each other.
"""
