# Chromium and playwright-core, for the console's end-to-end tests in a real
# headless browser (console/e2e_test.go). Chromium is Debian's package (no
# browser download: playwright-core drives it with executablePath);
# playwright-core is pinned and installed into $CAIRN_CACHE/playwright.
# Sourced by .ci/run with set -euo pipefail; also runnable on its own:
#   CAIRN_CACHE=~/.cache/cairn bash .ci/setup.d/40-chromium.sh
version="1.65.1"
peer="${CAIRN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn}/playwright"

if command -v chromium >/dev/null 2>&1; then
  echo "   chromium already installed: $(command -v chromium)"
else
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo -n"
    else
      echo "chromium is missing, and installing it needs root or sudo" >&2
      exit 1
    fi
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version 2>/dev/null || true

mkdir -p "$peer"
[ -f "$peer/package.json" ] || echo '{"private": true, "description": "the browser driver of the cairn console tests"}' > "$peer/package.json"
have=$(node -p "require('$peer/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$have" = "$version" ]; then
  echo "   playwright-core $version cached in $peer"
else
  (cd "$peer" && npm install --no-audit --no-fund --save-exact "playwright-core@$version")
fi
