#!/usr/bin/env bash
# Builds the Pushgateway pinned by this module into OUTDIR (a cache directory
# keyed by version, so it is built once). Usage: build.sh OUTDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
[ -x "$out/pushgateway" ] && { echo "pushgateway cached in $out"; exit 0; }
cd "$here"
version=$(go list -m -f "{{.Version}}" github.com/prometheus/pushgateway)
mkdir -p "$out"
tmp="$out/pushgateway.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "building pushgateway $version (1/1)"
ld="-X github.com/prometheus/common/version.Version=${version#v}"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$tmp" github.com/prometheus/pushgateway
mv "$tmp" "$out/pushgateway"
echo "done: $out/pushgateway"
