# SeaweedFS (Apache-2.0), for the archive S3 contract tests against a real
# S3 gateway (archive/seaweedfs_test.go). Builds `weed` from its Go module
# into $CAIRN_CACHE/seaweedfs/weed; `go install` is refused because of a
# replace directive in its go.mod, so build inside a writable copy of the
# module directory. About 7 minutes on 2 cores from empty caches; the binary
# is kept, and rebuilt only when the version below changes.
# Sourced by .ci/run with set -euo pipefail; also runnable on its own:
#   CAIRN_CACHE=~/.cache/cairn bash .ci/setup.d/30-seaweedfs.sh
version="v0.0.0-20261109003541-7506e5f91cd6"
peer="${CAIRN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn}/seaweedfs"
mkdir -p "$peer"

if [ -x "$peer/weed" ] && [ "$(cat "$peer/VERSION" 2>/dev/null)" = "$version" ]; then
  echo "   seaweedfs $version cached in $peer"
else
  t0=$SECONDS
  json=$(go mod download -json "github.com/seaweedfs/seaweedfs@$version")
  dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "go mod download gave no module directory for seaweedfs@$version:" >&2
    printf '%s\n' "$json" >&2
    exit 1
  fi
  echo "   downloaded in $((SECONDS - t0)) s"
  src=$(mktemp -d)
  # The module cache is read-only; go build needs to write go.sum entries.
  cp -R "$dir/." "$src/"
  chmod -R u+w "$src"
  t1=$SECONDS
  (cd "$src" && go build -o "$peer/weed.tmp" ./weed)
  mv "$peer/weed.tmp" "$peer/weed"
  echo "$version" > "$peer/VERSION"
  rm -rf "$src"
  echo "   built weed in $((SECONDS - t1)) s (total $((SECONDS - t0)) s)"
fi
"$peer/weed" version 2>/dev/null | head -n 1 || true
