#!/usr/bin/env bash
# Builds the real peers Weft's tests talk to (kube-apiserver, etcd, ...) from the Go module proxy into a
# cache outside the repository, keyed by version, so a second run costs nothing.
#
#   tests/env/peers.sh build [PEER...]   build (default: every peer)
#   tests/env/peers.sh path PEER         print the directory holding PEER's binaries (builds it if needed)
#   tests/env/peers.sh argocd-crds       print the directory of Argo CD's CRDs (from its Go module)
#   tests/env/peers.sh argocd-manifests  print the directory of Argo CD's install manifests (from its module)
#   tests/env/peers.sh ensure-redis      install Debian's redis-server when missing (Argo CD's cache)
#   tests/env/peers.sh ensure-socat      install Debian's socat when missing (the timestamp authority's port)
#   tests/env/peers.sh gpgsm             print a gpgsm that reads Fulcio certificates (see gpgsm_for_fulcio)
#   tests/env/peers.sh list              the peers and their versions
set -euo pipefail

CACHE="${WEFT_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weft-testenv}"
K8S_VERSION=v1.34.4
ARGOCD_VERSION=v3.6.1
# Argo CD 3.6, rekor-tiles 2.4 and timestamp-authority 2.2 need Go 1.27; the go command fetches that
# toolchain from the proxy for their builds only (flavours argocd and go1.27).
GO127_TOOLCHAIN=go1.27.3
ARGOCD_GOTOOLCHAIN=$GO127_TOOLCHAIN

# name | version | module | packages (space separated) | flavour
PEERS=$(cat <<EOF
etcd|v3.6.4|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3|plain
kube-apiserver|$K8S_VERSION|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|kubernetes
kubectl|$K8S_VERSION|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubectl|kubernetes
kube-controller-manager|$K8S_VERSION|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|kubernetes
argocd|$ARGOCD_VERSION|github.com/argoproj/argo-cd/v3|github.com/argoproj/argo-cd/v3/cmd|argocd
kustomize|v5.8.1|sigs.k8s.io/kustomize/kustomize/v5|sigs.k8s.io/kustomize/kustomize/v5|plain
helm|v3.22.0|helm.sh/helm/v3|helm.sh/helm/v3/cmd/helm|plain
crane|v0.22.1|github.com/google/go-containerregistry|github.com/google/go-containerregistry/cmd/crane|plain
referrers-registry|v0.22.1|github.com/google/go-containerregistry|github.com/google/go-containerregistry/pkg/registry|referrers-registry
registry|v3.1.2|github.com/distribution/distribution/v3|github.com/distribution/distribution/v3/cmd/registry|plain
cosign|v2.6.5|github.com/sigstore/cosign/v2|github.com/sigstore/cosign/v2/cmd/cosign|plain
cosign3|v3.1.3|github.com/sigstore/cosign/v3|github.com/sigstore/cosign/v3/cmd/cosign|plain
slsa-verifier|v2.7.1|github.com/slsa-framework/slsa-verifier/v2|github.com/slsa-framework/slsa-verifier/v2/cli/slsa-verifier|plain
kubectl-sigstore|v0.5.4|github.com/sigstore/k8s-manifest-sigstore|github.com/sigstore/k8s-manifest-sigstore/cmd/kubectl-sigstore|plain
trillian|v1.7.3|github.com/google/trillian|github.com/google/trillian/cmd/trillian_log_server github.com/google/trillian/cmd/trillian_log_signer|plain
rekor|v1.5.4|github.com/sigstore/rekor|github.com/sigstore/rekor/cmd/rekor-server github.com/sigstore/rekor/cmd/rekor-cli|plain
rekor2|v2.4.2|github.com/sigstore/rekor-tiles/v2|github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix|go1.27
fulcio|v1.8.8|github.com/sigstore/fulcio|github.com/sigstore/fulcio|plain
timestamp-authority|v2.2.1|github.com/sigstore/timestamp-authority/v2|github.com/sigstore/timestamp-authority/v2/cmd/timestamp-server|go1.27
EOF
)

# Dependencies pinned to other versions than a peer's go.mod asks for: name | module=module@version.
# rekor-tiles 2.4 asks for fulcio 1.9.1 (only its identity-mode server uses fulcio's packages) and, through
# it, goa 3.34.0, neither of which the proxy serves; it builds with fulcio 1.8.8 and the goa that one uses.
PEER_REPLACES=$(cat <<'EOF'
rekor2|github.com/sigstore/fulcio=github.com/sigstore/fulcio@v1.8.8
rekor2|goa.design/goa/v3=goa.design/goa/v3@v3.27.0
EOF
)

log() { printf '[peers] %s\n' "$*" >&2; }

peer_field() { # peer_field NAME INDEX
  awk -F'|' -v n="$1" -v i="$2" '$1 == n { print $i }' <<<"$PEERS"
}

peer_dir() { echo "$CACHE/$1-$(peer_field "$1" 2)"; }

# Writes a throwaway wrapper module that requires MODULE@VERSION, so `go build` works for modules
# whose own go.mod has replace directives (which `go install pkg@version` refuses).
# The command a package builds: its last path element, or the one before a major-version suffix
# (sigs.k8s.io/kustomize/kustomize/v5 is `kustomize`); etcd's server module is the `etcd` command.
binary_name() {
  local p=$1 b
  [ "$p" = go.etcd.io/etcd/server/v3 ] && { echo etcd; return; }
  # rekor-tiles has one server command per storage backend (cmd/rekor-server/posix, .../gcp, ...).
  [[ "$p" == */rekor-tiles/v2/cmd/rekor-server/* ]] && { echo rekor-server; return; }
  b=$(basename "$p")
  if [[ "$b" =~ ^v[0-9]+$ ]]; then b=$(basename "$(dirname "$p")"); fi
  echo "$b"
}

build_peer() {
  local name=$1 version module pkgs flavour dir work start
  version=$(peer_field "$name" 2); module=$(peer_field "$name" 3)
  pkgs=$(peer_field "$name" 4); flavour=$(peer_field "$name" 5)
  [ -n "$version" ] || { log "unknown peer: $name"; return 2; }
  dir=$(peer_dir "$name")
  if [ -f "$dir/.complete" ]; then log "$name $version: cached in $dir"; return 0; fi
  start=$(date +%s)
  log "$name $version: building from the Go module proxy (first time only)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    [ "$flavour" = argocd ] && export GOTOOLCHAIN=$ARGOCD_GOTOOLCHAIN
    [ "$flavour" = go1.27 ] && export GOTOOLCHAIN=$GO127_TOOLCHAIN
    go mod init local/wrapper >/dev/null 2>&1
    local ldflags="-s -w"
    if [ "$flavour" = argocd ]; then
      # Argo CD's go.mod replaces the k8s.io modules (and a few others) and points gitops-engine at a
      # directory of its repository; copy the replace block, leave that one out (the module is served).
      local gomod
      gomod=$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
      sed -n '/^replace (/,/^)/p' "$gomod" | grep '=>' | grep -v '=> \./' | while read -r from _ to to_version; do
        go mod edit -replace="$from=$to@$to_version"
      done
      ldflags="$ldflags -X github.com/argoproj/argo-cd/v3/common.version=${version#v}"
    fi
    if [ "$flavour" = kubernetes ]; then
      # k8s.io/kubernetes points every staging module at ./staging; pin each to the matching v0.x release.
      local gomod staging minor
      gomod=$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
      staging="v0${version#v1}"
      for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
        go mod edit -replace="$m=$m@$staging"
      done
      minor=$(cut -d. -f2 <<<"$version")
      ldflags="$ldflags -X k8s.io/component-base/version.gitVersion=$version"
      ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    fi
    awk -F'|' -v n="$name" '$1 == n { print $2 }' <<<"$PEER_REPLACES" | while read -r r; do
      go mod edit -replace="$r"
    done
    # `go get` each package (not just the module) so go.sum covers everything they import.
    for p in $pkgs; do go get "$p@$version" 2>&1 | grep -v '^go: \(downloading\|added\|upgraded\)' >&2 || true; done
    mkdir -p "$dir/bin"
    if [ "$flavour" = referrers-registry ]; then
      # go-containerregistry's registry with its OCI 1.1 referrers API switched on (its `crane registry
      # serve` command leaves it off): the registry with referrers for the tests.
      cat > main.go <<'GO'
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	address := flag.String("address", "127.0.0.1:5000", "address to listen on")
	disk := flag.String("disk", "", "directory for blobs")
	flag.Parse()
	handler := registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(*disk)), registry.WithReferrersSupport(true))
	log.Fatal(http.ListenAndServe(*address, handler))
}
GO
      go mod tidy >/dev/null 2>&1
      go build -trimpath -ldflags "$ldflags" -o "$dir/bin/$name" .
    elif [ "$flavour" = argocd ]; then
      # One multi-call binary; each component is a link named after it. The repo-server runs the two
      # wrapper scripts of the module's hack/ even with GPG off, so they go next to it.
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/bin/argocd" "$pkgs"
      for c in argocd-application-controller argocd-repo-server argocd-server; do ln -sf argocd "$dir/bin/$c"; done
      local src
      src=$(go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
      install -m 0755 "$src/hack/git-verify-wrapper.sh" "$src/hack/gpg-wrapper.sh" "$dir/bin/"
    else
      for p in $pkgs; do
        go build -trimpath -ldflags "$ldflags" -o "$dir/bin/$(binary_name "$p")" "$p"
      done
    fi
  )
  touch "$dir/.complete"
  log "$name $version: built in $(( $(date +%s) - start ))s"
}

# Trillian's MySQL schema, from its module.
trillian_schema() {
  local d
  d=$(cd /tmp && go mod download -json "github.com/google/trillian@$(peer_field trillian 2)" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  [ -f "$d/storage/mysql/schema/storage.sql" ] || { log "no storage.sql in the Trillian module"; return 1; }
  echo "$d/storage/mysql/schema/storage.sql"
}

# A program from a Debian package, installed when missing: ensure_package PROGRAM PACKAGE WHAT-FOR.
ensure_package() {
  local program=$1 package=$2 why=$3
  command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's $package ($why)"
    (apt-get install -y -q "$package" || { apt-get update -q && apt-get install -y -q "$package"; }) >&2
  else
    log "$program is missing: install Debian's $package"; return 1
  fi
}
ensure_mariadb() { ensure_package mariadbd mariadb-server "Trillian's storage"; }
ensure_redis() { ensure_package redis-server redis-server "Argo CD's cache"; }
ensure_socat() { ensure_package socat socat "the timestamp authority's port"; }

# Fulcio's certificates have an empty subject, which libksba reads from 1.6.7 on ("Allow for an empty
# Subject in certs", T7171); Debian 12's gpgsm links 1.6.3, which refuses them ("no issuer found in
# certificate"). Builds libksba 1.6.7 from Debian's source archive (checked by its sha256) and prints a
# wrapper that runs the system's gpgsm with it.
# The Debian archive this machine's apt uses (its first URI).
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { log "no Debian archive in apt's sources"; return 1; }
  echo "${uri%/}"
}
LIBKSBA_VERSION=1.6.7
LIBKSBA_SHA256=cf72510b8ebb4eb6693eef765749d83677a03c79291a311040a5bfd79baab763
gpgsm_for_fulcio() {
  local dir="$CACHE/libksba-$LIBKSBA_VERSION" tmp
  if [ ! -f "$dir/.complete" ]; then
    ensure_package gpgsm gpgsm "X.509 commit signatures"
    ensure_package gpgrt-config libgpg-error-dev "building libksba"
    log "libksba $LIBKSBA_VERSION: building from Debian's source archive"
    tmp=$(mktemp -d); rm -rf "$dir"; mkdir -p "$dir/bin"
    curl -sSfL -o "$tmp/libksba.tar.bz2" \
      "$(debian_mirror)/pool/main/libk/libksba/libksba_$LIBKSBA_VERSION.orig.tar.bz2"
    echo "$LIBKSBA_SHA256  $tmp/libksba.tar.bz2" | sha256sum -c --quiet >&2
    mkdir "$tmp/src" && tar -xjf "$tmp/libksba.tar.bz2" -C "$tmp/src" --strip-components=1
    (cd "$tmp/src" && ./configure -q --prefix="$dir" --disable-static && make -s -j2 && make -s install) > "$tmp/build.log" 2>&1 \
      || { tail -20 "$tmp/build.log" >&2; log "libksba $LIBKSBA_VERSION did not build"; return 1; }
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec gpgsm "$@"\n' "$dir" > "$dir/bin/gpgsm"
    chmod +x "$dir/bin/gpgsm"
    rm -rf "$tmp"
    touch "$dir/.complete"
  fi
  echo "$dir/bin/gpgsm"
}

argocd_manifests() {
  local d
  d=$(cd /tmp && GOTOOLCHAIN=$ARGOCD_GOTOOLCHAIN go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  [ -d "$d/manifests/crds" ] || { log "Argo CD $ARGOCD_VERSION module has no manifests/crds"; return 1; }
  echo "$d/manifests"
}

argocd_crds() { echo "$(argocd_manifests)/crds"; }

cmd=${1:-build}; shift || true
case "$cmd" in
  build)
    names=("$@"); [ ${#names[@]} -gt 0 ] || mapfile -t names < <(cut -d'|' -f1 <<<"$PEERS")
    for n in "${names[@]}"; do build_peer "$n"; done
    argocd_crds >/dev/null
    trillian_schema >/dev/null
    ensure_mariadb
    ensure_redis
    ensure_socat
    gpgsm_for_fulcio >/dev/null ;;
  ensure-mariadb) ensure_mariadb ;;
  ensure-redis) ensure_redis ;;
  ensure-socat) ensure_socat ;;
  gpgsm) gpgsm_for_fulcio ;;
  trillian-schema) trillian_schema ;;
  path) build_peer "$1"; echo "$(peer_dir "$1")/bin" ;;
  argocd-crds) argocd_crds ;;
  argocd-manifests) argocd_manifests ;;
  list) awk -F'|' '{ print $1, $2 }' <<<"$PEERS" ;;
  *) echo "usage: $0 build [PEER...] | path PEER | argocd-crds | trillian-schema | ensure-mariadb | ensure-redis | ensure-socat | gpgsm | list" >&2; exit 2 ;;
esac
