#!/usr/bin/env bash
# Weft's main job on embedded defaults, with no cluster: `weft run` on the example Application.
#
# It makes a git repository from examples/shop with commits signed by a fresh SSH key, a fresh signing
# key, and the Secrets and ConfigMaps examples/profile.yaml refers to; then weft verifies the synced
# commit, renders the manifests from the verified tree, signs them, and writes the signed manifest image
# as an OCI image layout directory (./weft-out), which `cosign verify --local-image` checks.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> building weft"
cargo build --locked --quiet

work=$(mktemp -d -t weft-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "==> creating a signed git repository from examples/shop"
ssh-keygen -q -t ed25519 -N "" -C "release@example.com" -f "$work/release-key"
git init -q -b main "$work/shop"
cp examples/shop/*.yaml "$work/shop/"
git() { command git -C "$work/shop" -c user.name=Release -c user.email=release@example.com \
  -c gpg.format=ssh -c user.signingkey="$work/release-key" "$@"; }
git add -A && git commit -q -S -m "shop: cart service"
sed -i 's/replicas: 2/replicas: 3/' "$work/shop/deployment.yaml"
git commit -q -S -am "shop: scale cart to 3"
git log --format='   %h %s (signed)'
revision=$(git rev-parse HEAD)

echo "==> creating a signing key and the objects the profile refers to"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$work/signing.key"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def read(name):
    return open(f"{work}/{name}").read()
docs = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-signers", "namespace": "argocd"},
     "data": {"allowed_signers": "release@example.com " + read("release-key.pub")}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "weft-signing-key", "namespace": "argocd"},
     "stringData": {"cosign.key": read("signing.key")}},
]
open(f"{work}/resources.yaml", "w").write("\n---\n".join(json.dumps(d) for d in docs))
PY
sed -e "s#REPO_URL#file://$work/shop#g" -e "s#REVISION#$revision#g" examples/application.yaml > "$work/application.yaml"

echo "==> weft run"
rm -rf weft-out
target/debug/weft run --application "$work/application.yaml" --profile examples/profile.yaml \
  --resources "$work/resources.yaml" --out weft-out --cache-dir "$work/cache"

if command -v cosign >/dev/null 2>&1; then
  echo "==> cosign verify --local-image weft-out"
  cosign verify --local-image weft-out --key weft-out/cosign.pub --insecure-ignore-tlog >/dev/null && echo "   cosign: verified"
fi
