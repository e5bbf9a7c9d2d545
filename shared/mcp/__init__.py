"""MCP debugging tools over Chroma for one user at a time (``lmgpa mcp --user UUID``)."""
