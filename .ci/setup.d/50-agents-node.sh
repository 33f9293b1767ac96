# The Cloudflare Agents SDK's client (npm "agents", pinned), the AI SDK
# ("ai", whose UI message stream the chat protocol carries) and "ws" (the
# WebSocket of Node 20), for agent/agentsdk_test.go, which drives a
# session at /agents/{agent}/{session} with the real AgentClient and chat
# transport. Sourced by .ci/run with set -euo pipefail; also runnable on
# its own:
#   CAIRN_CACHE=~/.cache/cairn bash .ci/setup.d/50-agents-node.sh
version=0.32.0
ai_version=6.0.326
ws_version=8.23.0
peer="${CAIRN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn}/agents-node"
mkdir -p "$peer"
[ -f "$peer/package.json" ] || echo '{"private": true, "type": "module", "description": "the Agents SDK client, a peer of cairn tests"}' > "$peer/package.json"
have() { node -p "try { require('$peer/node_modules/$1/package.json').version } catch { '' }"; }
if [ "$(have agents)" = "$version" ] && [ "$(have ai)" = "$ai_version" ] && [ "$(have ws)" = "$ws_version" ]; then
  echo "   agents $version, ai $ai_version, ws $ws_version cached in $peer"
else
  (cd "$peer" && npm install --no-audit --no-fund --save-exact \
    "agents@$version" "ai@$ai_version" "ws@$ws_version")
fi
