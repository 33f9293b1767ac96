# The openai npm package, for the test that drives the chat completions
# endpoint with the real Node client (agent/npm_test.go). Major 6: major 7
# needs Node 22, and CI has Node 20.
peer="$CAIRN_CACHE/openai-node"
mkdir -p "$peer"
[ -f "$peer/package.json" ] || echo '{"private": true, "type": "module", "description": "the openai Node client, a peer of cairn tests"}' > "$peer/package.json"
(cd "$peer" && npm install --no-audit --no-fund openai@6)
