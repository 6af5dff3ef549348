#!/usr/bin/env bash
# Builds the Kubernetes components and etcd pinned by this module into a cache
# directory keyed by version, so a second `make` reuses them. Usage: build.sh OUTDIR
# One `go build` per binary, each announced on its own line ("building NAME (i/n)"),
# so the caller can say which one is compiling; Go's build cache shares the
# packages they have in common, so this costs no more than one big build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
version=$(cd "$here" && go list -m -f "{{.Version}}" k8s.io/kubernetes)
minor=$(echo "$version" | cut -d. -f2)
# etcd first (small), then the largest, whose packages the rest reuse.
cmds=(etcd kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy kubectl kubeadm)
etcd_version=$(cd "$here" && go list -m -f "{{.Version}}" go.etcd.io/etcd/server/v3)
missing=()
for c in "${cmds[@]}"; do [ -x "$out/$c" ] || missing+=("$c"); done
# The directory is keyed by the Kubernetes version only, so an etcd bump in go.mod
# must replace a cached etcd of another version (the kind node image is labelled
# with etcd's version and must not carry a different binary).
if [ -x "$out/etcd" ] && ! "$out/etcd" --version | grep -qx "etcd Version: ${etcd_version#v}"; then
  missing=(etcd "${missing[@]}")
fi
if [ ${#missing[@]} = 0 ]; then echo "k8s $version binaries cached in $out"; exit 0; fi
mkdir -p "$out"
tmp="$out.tmp.$$"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
ld=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
cd "$here"
echo "building Kubernetes $version and etcd into $out (tens of minutes on 2 cores, once)"
i=0
for c in "${missing[@]}"; do
  i=$((i + 1))
  echo "building $c ($i/${#missing[@]})"
  if [ "$c" = etcd ]; then pkg=./cmd/etcd; else pkg=k8s.io/kubernetes/cmd/$c; fi
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$tmp/$c" "$pkg"
  # Each binary lands as soon as it is built: an interrupted build keeps them.
  mv "$tmp/$c" "$out/$c"
done
echo "done: $(ls "$out" | tr '\n' ' ')"
