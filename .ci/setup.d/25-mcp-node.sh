# MCP servers from npm, for the agent/mcptools tests: the reference server
# @modelcontextprotocol/server-everything (stdio and streamable HTTP).
# Pinned; its own dependencies (the TypeScript MCP SDK, express) resolve
# within the ranges it declares.
peer="$CAIRN_CACHE/mcp-node"
version=2026.8.31
mkdir -p "$peer"
[ -f "$peer/package.json" ] || echo '{"private": true, "description": "MCP server peers of the agent/mcptools tests"}' > "$peer/package.json"
installed=$(node -p "try { require('$peer/node_modules/@modelcontextprotocol/server-everything/package.json').version } catch { '' }")
if [ "$installed" != "$version" ]; then
  (cd "$peer" && npm install --no-audit --no-fund "@modelcontextprotocol/server-everything@$version")
fi
