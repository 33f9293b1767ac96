# workerd via miniflare, for the bench peer test (bench/workerd).
peer="$CAIRN_CACHE/workerd"
mkdir -p "$peer"
[ -f "$peer/package.json" ] || echo '{"private": true, "description": "the workerd peer of cairn bench"}' > "$peer/package.json"
(cd "$peer" && npm install --no-audit --no-fund miniflare@4)
