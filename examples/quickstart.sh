#!/usr/bin/env bash
# Weft's main job on embedded defaults, with no cluster and no network: `weft run` on the example
# Application, every step passing.
#
# It makes a git repository from examples/shop with commits signed by a fresh SSH key; the container
# image the shop runs, in an OCI image layout, signed by a fresh image key; a fresh signing key; and the
# Secrets and ConfigMaps examples/profile.yaml refers to. Then weft verifies the synced commit, renders
# the manifests from the verified tree, verifies the image, signs the manifests, and writes the signed
# manifest image with its SLSA provenance as an OCI image layout directory (./weft-out), which
# `cosign verify --local-image` checks. No transparency log is in reach here: the image signature and
# the provenance are not logged, and weft says so.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x target/debug/weft ]; then
  echo "==> building weft (the first build takes about six minutes on two cores)"
fi
cargo build --locked

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

echo "==> creating the shop's container image (registry.example/shop/cart:1.4.2) in an OCI layout, signed"
# As `cosign save` lays an image out, with a cosign signature made by openssl (no cosign, no registry,
# no transparency log here): the image, and its signature under the image's `kind` annotations.
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$work/image.key"
openssl pkey -in "$work/image.key" -pubout -out "$work/image.pub" 2>/dev/null
python3 - "$work" <<'PY'
import base64, hashlib, io, json, os, subprocess, sys, tarfile
work = sys.argv[1]
layout = f"{work}/cart.oci"
os.makedirs(f"{layout}/blobs/sha256")
def blob(data, media_type, annotations=None):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    open(f"{layout}/blobs/sha256/{digest[7:]}", "wb").write(data)
    d = {"mediaType": media_type, "digest": digest, "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d
def image(layers, config):
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
                "layers": layers}
    return blob(json.dumps(manifest).encode(), manifest["mediaType"])
tar = io.BytesIO()
with tarfile.open(fileobj=tar, mode="w") as t:
    body = b"cart 1.4.2\n"
    info = tarfile.TarInfo("srv/cart/VERSION"); info.size = len(body); info.mtime = 0
    t.addfile(info, io.BytesIO(body))
layer = blob(tar.getvalue(), "application/vnd.oci.image.layer.v1.tar")
config = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/srv/cart/cart"]},
          "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
cart = image([layer], config)
payload = json.dumps({"critical": {"identity": {"docker-reference": "registry.example/shop/cart"},
                                   "image": {"docker-manifest-digest": cart["digest"]},
                                   "type": "cosign container image signature"}, "optional": None}).encode()
signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/image.key"], input=payload,
                           capture_output=True, check=True).stdout
sig = blob(payload, "application/vnd.dev.cosign.simplesigning.v1+json",
           {"dev.cosignproject.cosign/signature": base64.b64encode(signature).decode()})
sigs = image([sig], {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [sig["digest"]]}})
# The tag the shop's manifests name: a layout answers for a tag only when it names it.
cart["annotations"] = {"kind": "dev.cosignproject.cosign/image", "org.opencontainers.image.ref.name": "1.4.2"}
sigs["annotations"] = {"kind": "dev.cosignproject.cosign/sigs"}
json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [cart, sigs]},
          open(f"{layout}/index.json", "w"))
open(f"{layout}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
print(f"   {cart['digest']} (signed by a fresh image key)")
PY

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
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-image-signers", "namespace": "argocd"},
     "data": {"cosign.pub": read("image.pub")}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "weft-signing-key", "namespace": "argocd"},
     "stringData": {"cosign.key": read("signing.key")}},
]
open(f"{work}/resources.yaml", "w").write("\n---\n".join(json.dumps(d) for d in docs))
PY
sed -e "s#REPO_URL#file://$work/shop#g" -e "s#REVISION#$revision#g" examples/application.yaml > "$work/application.yaml"

echo "==> weft run"
rm -rf weft-out
target/debug/weft run --application "$work/application.yaml" --profile examples/profile.yaml \
  --resources "$work/resources.yaml" --image-layout "registry.example/shop/cart=$work/cart.oci" \
  --out weft-out --cache-dir "$work/cache"

cosign=$(command -v cosign || true)
if [ -n "$cosign" ]; then
  echo "==> cosign verify --local-image weft-out, and its SLSA provenance"
  check() { local out; out=$("$cosign" "$@" --local-image weft-out --key weft-out/cosign.pub --insecure-ignore-tlog 2>&1) \
    || { echo "$out" >&2; exit 1; }; }
  check verify
  echo "   cosign: the manifest image's signature verifies"
  check verify-attestation --type slsaprovenance1
  echo "   cosign: its SLSA provenance verifies"
fi
