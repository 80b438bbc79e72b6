#!/usr/bin/env bash
# The real peers Weft's tests run against, on 127.0.0.1 (built by peers.sh):
#   kube     etcd + kube-apiserver, with Weft's and Argo CD's CRDs installed, and a kubeconfig; its
#            ServiceAccount tokens' issuer is its own URL, whose discovery document anyone may read
#   registry distribution's registry (no OCI referrers API) and go-containerregistry's registry (with it)
#   rekor    MariaDB + Trillian (log server and signer) + rekor-server, with a stable log key
#   controllers  kube-controller-manager: Deployments become ReplicaSets and Pods, Services get
#            EndpointSlices, garbage collection and namespace deletion happen (no kubelet or scheduler:
#            Pods stay Pending)
#   argocd   a real Argo CD (redis, repo-server, application-controller, API server for the argocd CLI),
#            watching Applications in its namespace `argocd` and in namespaces named `argocd-e2e-*`
#   rekor2   Rekor v2 (rekor-tiles) with its log on disk, a P-256 checkpoint key, origin 127.0.0.1, and a
#            static file server for its tiles and checkpoint
#   fulcio   Fulcio with a file CA (a root made here) and the kube-apiserver as its `kubernetes` OIDC issuer:
#            `kubectl create token SA --audience sigstore` is a keyless identity (no CT log, so no SCTs)
#   tsa      sigstore's timestamp authority, which cosign v3 needs to log a Fulcio certificate in Rekor v2
#   With any of the last three, trusted_root.json and signing_config.json for cosign v3 name what started.
#   tests/env/sigstore-smoke.sh checks them end to end.
#
#   tests/env/testenv.sh run -- CMD [ARG...]   start, run CMD with the environment, stop (also on failure)
#   tests/env/testenv.sh start DIR             start in the background; DIR/env holds the environment
#   tests/env/testenv.sh stop DIR              stop what `start DIR` started
#
# WEFT_TESTENV_COMPONENTS picks components, started in the order given (default: "kube controllers registry
# rekor rekor2 fulcio tsa argocd"; fulcio comes after kube).
# WEFT_TESTENV_APF=1 turns on the apiserver's priority and fairness (off otherwise, so that no test is
# throttled by another), for the scale benchmark's throttled run.
# The environment: KUBECONFIG and WEFT_TEST_KUBECONFIG (admin token), WEFT_TEST_RESTRICTED_TOKEN (a user
# with no permissions, for RBAC tests), WEFT_TEST_APISERVER, WEFT_TEST_REGISTRY (no referrers),
# WEFT_TEST_COSIGN3 (cosign v3's binary; `cosign` on PATH is v2),
# WEFT_TEST_REGISTRY_REFERRERS, WEFT_TEST_REKOR_URL, WEFT_TEST_REKOR_PUBLIC_KEY (PEM file),
# WEFT_TEST_REKOR2_URL (write API), WEFT_TEST_REKOR2_READ_URL (tiles, checkpoint), WEFT_TEST_REKOR2_PUBLIC_KEY
# (PEM file), WEFT_TEST_REKOR2_ORIGIN (the origin its checkpoints are signed with), WEFT_TEST_FULCIO_URL,
# WEFT_TEST_GPGSM (a gpgsm that reads Fulcio's certificates, for keyless commits),
# WEFT_TEST_FULCIO_ROOT (PEM file: the CA's root, which issues the leaves itself), WEFT_TEST_OIDC_ISSUER (the
# issuer a certificate names: the apiserver's URL, which is its ServiceAccount tokens' issuer),
# WEFT_TEST_TSA_URL, WEFT_TEST_TSA_CHAIN (PEM file, leaf to root), WEFT_TEST_TRUSTED_ROOT and
# WEFT_TEST_SIGNING_CONFIG (cosign v3's --trusted-root and --signing-config), WEFT_TEST_SIGNING_CONFIG_REKOR2
# (Rekor v2 alone, for key-based signing), WEFT_TEST_ENV_DIR, and PATH with every peer's binaries.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEERS="$HERE/peers.sh"
COMPONENTS=${WEFT_TESTENV_COMPONENTS:-kube controllers registry rekor rekor2 fulcio tsa argocd}

log() { printf '[testenv] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.3
  done
}

# spawn DIR NAME COMMAND...: runs a peer in the background, its pid in DIR/NAME.pid, logs in DIR/logs.
spawn() {
  local dir=$1 name=$2; shift 2
  "$@" > "$dir/logs/$name.log" 2>&1 &
  echo $! > "$dir/$name.pid"
}

want() { [[ " $COMPONENTS " == *" $1 "* ]]; }

start_kube() {
  local dir=$1 bin_etcd bin_api bin_kubectl
  bin_etcd=$("$PEERS" path etcd)/etcd
  bin_api=$("$PEERS" path kube-apiserver)/kube-apiserver
  bin_kubectl=$("$PEERS" path kubectl)/kubectl
  mkdir -p "$dir/certs" "$dir/etcd"
  (
    cd "$dir/certs"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=weft-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile ext.cnf 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # The client certificate the apiserver presents to every admission webhook (as a cluster's admission
    # configuration sets it up), issued by the test CA.
    openssl req -newkey rsa:2048 -nodes -keyout webhook-client.key -out webhook-client.csr \
      -subj "/CN=system:kube-apiserver-webhook-client" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client-ext.cnf
    openssl x509 -req -in webhook-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out webhook-client.crt \
      -days 2 -extfile client-ext.cnf 2>/dev/null
  )
  cat > "$dir/certs/webhook-client.kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
- name: "*"
  user: {client-certificate: "$dir/certs/webhook-client.crt", client-key: "$dir/certs/webhook-client.key"}
EOF
  cat > "$dir/certs/admission.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: "$dir/certs/webhook-client.kubeconfig"
EOF
  local admin_token restricted_token
  admin_token=$(openssl rand -hex 24)
  restricted_token=$(openssl rand -hex 24)
  printf '%s,weft-test-admin,1,"system:masters"\n%s,weft-test-restricted,2\n' "$admin_token" "$restricted_token" > "$dir/certs/tokens.csv"

  # The ServiceAccount admission plugin (a Pod's token volume) needs the ServiceAccounts that
  # kube-controller-manager makes in each namespace: on with the controllers, off without them.
  local -a admission=(--disable-admission-plugins ServiceAccount)
  if want controllers; then admission=(--enable-admission-plugins ServiceAccount); fi
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  spawn "$dir" etcd "$bin_etcd" --data-dir "$dir/etcd" --name weft-test \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "weft-test=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
  wait_for 60 "etcd" curl -sf "http://127.0.0.1:$etcd_port/health"

  # ServiceAccount tokens name the apiserver's own URL as their issuer, so that an OIDC relying party on
  # this machine (Fulcio) can fetch the issuer's discovery document and keys from it; the in-cluster name
  # stays an accepted issuer.
  local server="https://127.0.0.1:$api_port"
  spawn "$dir" kube-apiserver "$bin_api" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/certs/apiserver.crt" --tls-private-key-file "$dir/certs/apiserver.key" \
    --client-ca-file "$dir/certs/ca.crt" --cert-dir "$dir/certs" \
    --service-account-issuer "$server" --service-account-issuer https://kubernetes.default.svc \
    --service-account-jwks-uri "$server/openid/v1/jwks" --service-account-key-file "$dir/certs/sa.pub" \
    --service-account-signing-key-file "$dir/certs/sa.key" --service-cluster-ip-range 10.0.0.0/16 \
    --token-auth-file "$dir/certs/tokens.csv" --authorization-mode RBAC \
    "${admission[@]}" --enable-priority-and-fairness="$([ "${WEFT_TESTENV_APF:-0}" = 1 ] && echo true || echo false)" \
    --admission-control-config-file "$dir/certs/admission.yaml"

  cat > "$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: weft-test
  cluster: {server: "$server", certificate-authority: "$dir/certs/ca.crt"}
users:
- name: admin
  user: {token: "$admin_token"}
contexts:
- name: weft-test
  context: {cluster: weft-test, user: admin, namespace: default}
current-context: weft-test
EOF
  wait_for 120 "kube-apiserver /readyz" curl -sf --cacert "$dir/certs/ca.crt" -H "Authorization: Bearer $admin_token" "$server/readyz"

  local argocd_crds
  argocd_crds=$("$PEERS" argocd-crds)
  KUBECONFIG="$dir/kubeconfig" "$bin_kubectl" apply --server-side --field-manager weft-testenv \
    -f "$argocd_crds/application-crd.yaml" -f "$argocd_crds/appproject-crd.yaml" -f "$ROOT/crds/weft.crds.yaml" \
    > "$dir/logs/setup.log" 2>&1 || { cat "$dir/logs/setup.log" >&2; return 1; }
  KUBECONFIG="$dir/kubeconfig" "$bin_kubectl" wait --for condition=established --timeout 60s \
    crd/applications.argoproj.io crd/appprojects.argoproj.io \
    crd/integrityprofiles.weft.dev crd/applicationprovenances.weft.dev >> "$dir/logs/setup.log" 2>&1
  # Argo CD's namespace and its default AppProject, as an installation has them; Applications in any
  # namespace may use it (the tests give each its own namespace). Anyone may read the ServiceAccount
  # issuer's discovery document and keys, as a cluster whose tokens an outside party verifies allows.
  KUBECONFIG="$dir/kubeconfig" "$bin_kubectl" apply --server-side --field-manager weft-testenv -f - \
    >> "$dir/logs/setup.log" 2>&1 <<'YAML' || { cat "$dir/logs/setup.log" >&2; return 1; }
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: service-account-issuer-discovery-unauthenticated}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:service-account-issuer-discovery"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:unauthenticated"}]
---
apiVersion: v1
kind: Namespace
metadata: {name: argocd}
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: default, namespace: argocd}
spec:
  sourceRepos: ["*"]
  sourceNamespaces: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
YAML

  cat >> "$dir/env" <<EOF
export KUBECONFIG="$dir/kubeconfig"
export WEFT_TEST_KUBECONFIG="$dir/kubeconfig"
export WEFT_TEST_APISERVER="$server"
export WEFT_TEST_RESTRICTED_TOKEN="$restricted_token"
export WEFT_TEST_KUBECTL="$bin_kubectl"
EOF
  log "kube-apiserver ready at $server"
}

start_controllers() {
  local dir=$1 bin kubectl
  bin=$("$PEERS" path kube-controller-manager)/kube-controller-manager
  kubectl=$("$PEERS" path kubectl)/kubectl
  # The controllers use credentials of their own ServiceAccounts (as in a cluster), signed with the
  # apiserver's ServiceAccount key; serving and leader election are off.
  spawn "$dir" kube-controller-manager "$bin" --kubeconfig "$dir/kubeconfig" \
    --service-account-private-key-file "$dir/certs/sa.key" --root-ca-file "$dir/certs/ca.crt" \
    --use-service-account-credentials --controllers '*' --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --cluster-signing-cert-file "$dir/certs/ca.crt" \
    --cluster-signing-key-file "$dir/certs/ca.key" --v 1
  # Ready when it has made the default ServiceAccount of a new namespace.
  KUBECONFIG="$dir/kubeconfig" "$kubectl" create namespace weft-testenv-probe >/dev/null
  wait_for 60 "kube-controller-manager" env KUBECONFIG="$dir/kubeconfig" "$kubectl" \
    get serviceaccount default -n weft-testenv-probe
  log "kube-controller-manager ready"
}

start_argocd() {
  local dir=$1 bin kubectl redis_port repo_port repo_metrics ctl_metrics server_port server_metrics
  bin=$("$PEERS" path argocd)
  kubectl=$("$PEERS" path kubectl)/kubectl
  "$PEERS" ensure-redis
  redis_port=$(free_port); repo_port=$(free_port); repo_metrics=$(free_port)
  ctl_metrics=$(free_port); server_port=$(free_port); server_metrics=$(free_port)
  mkdir -p "$dir/argocd/tls" "$dir/argocd/ssh" "$dir/argocd/gnupg" "$dir/argocd/tmp"
  chmod 700 "$dir/argocd/gnupg"
  spawn "$dir" redis redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no
  wait_for 30 "redis" redis-cli -p "$redis_port" ping
  # What an Argo CD installation holds before it starts: its default argocd-cm (resource exclusions and
  # customizations) from the module's manifests, the tracking method set explicitly, and the rest.
  KUBECONFIG="$dir/kubeconfig" "$kubectl" apply --server-side --field-manager argocd-install -n argocd \
    -f "$("$PEERS" argocd-manifests)/base/config/argocd-cm.yaml" >> "$dir/logs/setup.log" 2>&1 \
    || { cat "$dir/logs/setup.log" >&2; return 1; }
  KUBECONFIG="$dir/kubeconfig" "$kubectl" apply --server-side --field-manager weft-testenv -f - \
    >> "$dir/logs/setup.log" 2>&1 <<YAML || { cat "$dir/logs/setup.log" >&2; return 1; }
apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-cm, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
data:
  application.resourceTrackingMethod: annotation
---
apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-rbac-cm, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
---
apiVersion: v1
kind: Secret
metadata: {name: argocd-secret, namespace: argocd, labels: {app.kubernetes.io/part-of: argocd}}
stringData: {server.secretkey: "$(openssl rand -hex 16)"}
YAML
  local apps="argocd-e2e-*"
  # Every Argo CD process: the cluster through the kubeconfig (the in-cluster destination included), no
  # GPG of its own, private data directories, and the renderers and wrapper scripts on PATH.
  local env=(env KUBECONFIG="$dir/kubeconfig" ARGOCD_FAKE_IN_CLUSTER=true ARGOCD_GPG_ENABLED=false
    ARGOCD_TLS_DATA_PATH="$dir/argocd/tls" ARGOCD_SSH_DATA_PATH="$dir/argocd/ssh"
    ARGOCD_GNUPGHOME="$dir/argocd/gnupg" TMPDIR="$dir/argocd/tmp" ARGOCD_ASK_PASS_SOCK="$dir/argocd/askpass.sock"
    PATH="$bin:$("$PEERS" path helm):$("$PEERS" path kustomize):$PATH")
  spawn "$dir" argocd-repo-server "${env[@]}" "$bin/argocd-repo-server" --address 127.0.0.1 --port "$repo_port" \
    --metrics-address 127.0.0.1 --metrics-port "$repo_metrics" --redis "127.0.0.1:$redis_port" --loglevel warn
  spawn "$dir" argocd-application-controller "${env[@]}" HOSTNAME=argocd-application-controller-0 \
    "$bin/argocd-application-controller" --kubeconfig "$dir/kubeconfig" --namespace argocd \
    --redis "127.0.0.1:$redis_port" --repo-server "127.0.0.1:$repo_port" --metrics-port "$ctl_metrics" \
    --app-resync "${WEFT_TEST_ARGOCD_RESYNC:-20}" --application-namespaces "$apps" --loglevel warn
  spawn "$dir" argocd-server "${env[@]}" "$bin/argocd-server" --insecure --disable-auth --address 127.0.0.1 \
    --port "$server_port" --metrics-port "$server_metrics" --dex-server http://127.0.0.1:1 \
    --repo-server "127.0.0.1:$repo_port" --redis "127.0.0.1:$redis_port" --namespace argocd \
    --application-namespaces "$apps" --loglevel warn
  wait_for 60 "argocd-repo-server" curl -sf "http://127.0.0.1:$repo_metrics/metrics"
  wait_for 60 "argocd-application-controller" curl -sf "http://127.0.0.1:$ctl_metrics/metrics"
  wait_for 60 "argocd-server" curl -sf "http://127.0.0.1:$server_port/healthz"
  cat >> "$dir/env" <<EOF
export WEFT_TEST_ARGOCD_SERVER="127.0.0.1:$server_port"
export WEFT_TEST_ARGOCD_APP_NAMESPACES="$apps"
export WEFT_TEST_ARGOCD_METRICS="http://127.0.0.1:$ctl_metrics/metrics"
EOF
  log "Argo CD ready (API server 127.0.0.1:$server_port)"
}

start_registry() {
  local dir=$1 distribution referrers port_plain port_referrers
  distribution=$("$PEERS" path registry)/registry
  referrers=$("$PEERS" path referrers-registry)/referrers-registry
  port_plain=$(free_port); port_referrers=$(free_port)
  mkdir -p "$dir/registry-data" "$dir/crane-data"
  cat > "$dir/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/registry-data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$port_plain
EOF
  spawn "$dir" registry "$distribution" serve "$dir/registry.yml"
  spawn "$dir" referrers-registry "$referrers" --address "127.0.0.1:$port_referrers" --disk "$dir/crane-data"
  wait_for 30 "distribution registry" curl -sf "http://127.0.0.1:$port_plain/v2/"
  wait_for 30 "registry with referrers" curl -sf "http://127.0.0.1:$port_referrers/v2/"
  cat >> "$dir/env" <<EOF
export WEFT_TEST_REGISTRY="127.0.0.1:$port_plain"
export WEFT_TEST_REGISTRY_REFERRERS="127.0.0.1:$port_referrers"
EOF
  log "registries ready: 127.0.0.1:$port_plain (no referrers API), 127.0.0.1:$port_referrers (referrers API)"
}

start_rekor() {
  local dir=$1 trillian rekor db_port rpc_port http_port signer_rpc signer_http rekor_port sock
  trillian=$("$PEERS" path trillian)
  rekor=$("$PEERS" path rekor)
  "$PEERS" ensure-mariadb
  db_port=$(free_port); rpc_port=$(free_port); http_port=$(free_port)
  signer_rpc=$(free_port); signer_http=$(free_port); rekor_port=$(free_port)
  sock="$dir/mysql.sock"
  mkdir -p "$dir/mysql"
  mariadb-install-db --no-defaults --datadir="$dir/mysql" --user="$(id -un)" --auth-root-authentication-method=normal \
    --skip-test-db > "$dir/logs/mariadb-install.log" 2>&1
  spawn "$dir" mariadb mariadbd --no-defaults --datadir="$dir/mysql" --socket="$sock" --port="$db_port" \
    --bind-address=127.0.0.1 --user="$(id -un)" --skip-log-bin --innodb-flush-log-at-trx-commit=0
  wait_for 60 "MariaDB" mariadb --no-defaults -S "$sock" -u root -e "SELECT 1"
  mariadb --no-defaults -S "$sock" -u root -e "CREATE DATABASE trillian"
  mariadb --no-defaults -S "$sock" -u root trillian < "$("$PEERS" trillian-schema)"
  local dsn="root@tcp(127.0.0.1:$db_port)/trillian"
  spawn "$dir" trillian-log-server "$trillian/trillian_log_server" --storage_system=mysql --mysql_uri="$dsn" \
    --rpc_endpoint="127.0.0.1:$rpc_port" --http_endpoint="127.0.0.1:$http_port" --quota_system=noop
  spawn "$dir" trillian-log-signer "$trillian/trillian_log_signer" --storage_system=mysql --mysql_uri="$dsn" \
    --rpc_endpoint="127.0.0.1:$signer_rpc" --http_endpoint="127.0.0.1:$signer_http" --quota_system=noop \
    --force_master --sequencer_interval=50ms --batch_size=500
  wait_for 60 "Trillian" curl -sf "http://127.0.0.1:$http_port/healthz"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/rekor.key" 2>/dev/null
  openssl ec -in "$dir/rekor.key" -pubout -out "$dir/rekor.pub" 2>/dev/null
  start_rekor_server "$dir" "$rekor" "$rpc_port" "$rekor_port" "$dsn"
  cat >> "$dir/env" <<EOF
export WEFT_TEST_REKOR_URL="http://127.0.0.1:$rekor_port"
export WEFT_TEST_REKOR_PUBLIC_KEY="$dir/rekor.pub"
export WEFT_TEST_REKOR_STOP="$HERE/testenv.sh stop-rekor $dir"
export WEFT_TEST_REKOR_START="$HERE/testenv.sh start-rekor $dir"
EOF
  log "rekor ready at http://127.0.0.1:$rekor_port"
}

start_rekor_server() { # DIR BIN RPC_PORT PORT DSN
  local dir=$1 bin=$2 rpc=$3 port=$4 dsn=$5
  echo "$rpc $port $dsn" > "$dir/rekor.args"
  spawn "$dir" rekor-server "$bin/rekor-server" serve --rekor_server.address=127.0.0.1 --port="$port" \
    --trillian_log_server.address=127.0.0.1 --trillian_log_server.port="$rpc" \
    --rekor_server.signer="$dir/rekor.key" --search_index.storage_provider=mysql --search_index.mysql.dsn="$dsn" \
    --enable_attestation_storage=false --log_type=prod
  wait_for 60 "rekor-server" curl -sf "http://127.0.0.1:$port/ping"
}

# Rekor v2 (rekor-tiles) with its log on the local filesystem, signing checkpoints with a P-256 key made
# for this environment; its origin is the host of its URL, as verifiers expect (they take the origin from
# the log's URL in the trusted root). Tiles and checkpoints are read from a static file server over the
# log's directory, as in a deployment.
start_rekor2() {
  local dir=$1 bin port grpc_port metrics_port read_port origin=127.0.0.1
  bin=$("$PEERS" path rekor2)/rekor-server
  port=$(free_port); grpc_port=$(free_port); metrics_port=$(free_port); read_port=$(free_port)
  mkdir -p "$dir/rekor2/log"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/rekor2/key.pem" 2>/dev/null
  openssl pkey -in "$dir/rekor2/key.pem" -pubout -out "$dir/rekor2/pub.pem" 2>/dev/null
  spawn "$dir" rekor2-server "$bin" serve --hostname "$origin" --storage-dir "$dir/rekor2/log" \
    --signer-filepath "$dir/rekor2/key.pem" --http-address 127.0.0.1 --http-port "$port" \
    --grpc-address 127.0.0.1 --grpc-port "$grpc_port" --http-metrics-port "$metrics_port" \
    --checkpoint-interval 1s --log-level warn
  spawn "$dir" rekor2-read python3 -m http.server --bind 127.0.0.1 --directory "$dir/rekor2/log" "$read_port"
  wait_for 60 "rekor-tiles" curl -sf "http://127.0.0.1:$port/healthz"
  wait_for 30 "rekor-tiles checkpoint" curl -sf "http://127.0.0.1:$read_port/checkpoint"
  cat >> "$dir/env" <<EOF
export WEFT_TEST_REKOR2_URL="http://127.0.0.1:$port"
export WEFT_TEST_REKOR2_READ_URL="http://127.0.0.1:$read_port"
export WEFT_TEST_REKOR2_PUBLIC_KEY="$dir/rekor2/pub.pem"
export WEFT_TEST_REKOR2_ORIGIN="$origin"
EOF
  log "rekor v2 ready at http://127.0.0.1:$port (origin $origin; tiles at http://127.0.0.1:$read_port)"
}

# Fulcio with a file CA (a root made for this environment, which signs the leaves itself) and the test
# kube-apiserver as its only OIDC issuer, of type kubernetes: a ServiceAccount token with audience
# `sigstore` gets a certificate naming https://kubernetes.io/namespaces/NS/serviceaccounts/NAME. No CT log:
# certificates carry no SCT, so verifiers need cosign's --insecure-ignore-sct. Its metrics port listens on
# every interface (Fulcio has no flag for that address).
start_fulcio() {
  local dir=$1 bin port grpc_port metrics_port issuer
  issuer=$(sed -n 's/^export WEFT_TEST_APISERVER="\(.*\)"$/\1/p' "$dir/env")
  [ -n "$issuer" ] || { log "fulcio needs the kube component (its OIDC issuer) started before it"; return 2; }
  bin=$("$PEERS" path fulcio)/fulcio
  port=$(free_port); grpc_port=$(free_port); metrics_port=$(free_port)
  mkdir -p "$dir/fulcio"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/fulcio/root.key" \
    -out "$dir/fulcio/root.pem" -days 2 -subj "/O=weft-test/CN=weft-test-fulcio-root" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  python3 - "$issuer" "$dir/certs/ca.crt" > "$dir/fulcio/config.json" <<'PY'
import json, sys
issuer, ca = sys.argv[1], open(sys.argv[2]).read()
print(json.dumps({"OIDCIssuers": {issuer: {"IssuerURL": issuer, "ClientID": "sigstore", "Type": "kubernetes",
                                             "CACert": ca}}}, indent=2))
PY
  spawn "$dir" fulcio "$bin" serve --ca fileca --fileca-cert "$dir/fulcio/root.pem" \
    --fileca-key "$dir/fulcio/root.key" --fileca-key-passwd unused --fileca-watch=false \
    --config-path "$dir/fulcio/config.json" --ct-log-url "" --host 127.0.0.1 --port "$port" \
    --grpc-host 127.0.0.1 --grpc-port "$grpc_port" --metrics-port "$metrics_port" \
    --legacy-unix-domain-socket "$dir/fulcio/legacy.sock" --log_type prod
  wait_for 60 "fulcio" curl -sf "http://127.0.0.1:$port/healthz"
  # It reads the issuer's discovery document once, at start; without it no token is accepted.
  if grep -q 'error creating provider' "$dir/logs/fulcio.log"; then
    log "fulcio could not use the apiserver as its OIDC issuer:"; grep 'error creating provider' "$dir/logs/fulcio.log" >&2
    return 1
  fi
  cat >> "$dir/env" <<EOF
export WEFT_TEST_GPGSM="$("$PEERS" gpgsm)"
export WEFT_TEST_FULCIO_URL="http://127.0.0.1:$port"
export WEFT_TEST_FULCIO_ROOT="$dir/fulcio/root.pem"
export WEFT_TEST_OIDC_ISSUER="$issuer"
EOF
  log "fulcio ready at http://127.0.0.1:$port (issuer $issuer)"
}

# sigstore's timestamp authority (RFC 3161), with its in-memory signer. cosign v3 asks for one to put a
# short-lived certificate into Rekor v2, whose entries carry no time of their own. Its metrics listen on
# a fixed port of every interface (so does rekor v1's), so it runs in a network namespace of its own,
# serving on a unix socket that socat brings to a port on 127.0.0.1.
start_tsa() {
  local dir=$1 bin port
  bin=$("$PEERS" path timestamp-authority)/timestamp-server
  "$PEERS" ensure-socat
  port=$(free_port)
  mkdir -p "$dir/tsa"
  # Root makes the namespace itself; anyone else through a user namespace of their own.
  local netns=(unshare --net)
  [ "$(id -u)" = 0 ] || netns+=(--map-root-user)
  spawn "$dir" tsa "${netns[@]}" "$bin" serve --scheme unix --socket-path "$dir/tsa/tsa.sock" \
    --timestamp-signer memory --disable-ntp-monitoring --log-type prod
  wait_for 60 "timestamp authority" curl -sf --unix-socket "$dir/tsa/tsa.sock" http://localhost/ping
  spawn "$dir" tsa-port socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$dir/tsa/tsa.sock"
  wait_for 30 "timestamp authority's port" curl -sf "http://127.0.0.1:$port/ping"
  curl -sf "http://127.0.0.1:$port/api/v1/timestamp/certchain" > "$dir/tsa/chain.pem"
  cat >> "$dir/env" <<EOF
export WEFT_TEST_TSA_URL="http://127.0.0.1:$port/api/v1/timestamp"
export WEFT_TEST_TSA_CHAIN="$dir/tsa/chain.pem"
EOF
  log "timestamp authority ready at http://127.0.0.1:$port/api/v1/timestamp"
}

# cosign v3's signing config and trusted root for the sigstore components started: Fulcio, Rekor v2, the
# timestamp authority (signing_config.json), Rekor v2 alone (signing_config_rekor2.json, for key-based
# signing), and every one of their keys and roots (trusted_root.json).
write_sigstore_config() {
  local dir=$1
  want rekor2 || want fulcio || want tsa || return 0
  # shellcheck disable=SC1091
  ( source "$dir/env" && python3 "$HERE/sigstore_config.py" "$dir" )
  {
    echo "export WEFT_TEST_TRUSTED_ROOT=\"$dir/trusted_root.json\""
    echo "export WEFT_TEST_SIGNING_CONFIG=\"$dir/signing_config.json\""
    if want rekor2; then echo "export WEFT_TEST_SIGNING_CONFIG_REKOR2=\"$dir/signing_config_rekor2.json\""; fi
  } >> "$dir/env"
}

start() {
  local dir=$1 start_s
  start_s=$(date +%s)
  mkdir -p "$dir/logs"
  : > "$dir/env"
  local paths=""
  for c in $COMPONENTS; do
    case "$c" in
      kube) start_kube "$dir" ;;
      registry) start_registry "$dir" ;;
      rekor) start_rekor "$dir" ;;
      controllers) start_controllers "$dir" ;;
      argocd) start_argocd "$dir" ;;
      rekor2) start_rekor2 "$dir" ;;
      fulcio) start_fulcio "$dir" ;;
      tsa) start_tsa "$dir" ;;
      *) log "unknown component $c"; return 2 ;;
    esac
  done
  write_sigstore_config "$dir"
  for p in kubectl kustomize helm crane cosign kubectl-sigstore rekor slsa-verifier; do
    paths="$paths:$("$PEERS" path "$p")"
  done
  if want argocd; then paths="$paths:$("$PEERS" path argocd)"; fi
  # cosign v3 beside v2 (which stays `cosign` on PATH): by its path.
  cat >> "$dir/env" <<EOF
export WEFT_TEST_ENV_DIR="$dir"
export PATH="${paths#:}:\$PATH"
export WEFT_TEST_COSIGN3="$("$PEERS" path cosign3)/cosign"
EOF
  touch "$dir/ready"
  log "test environment ($COMPONENTS) ready in $(( $(date +%s) - start_s ))s (logs in $dir/logs)"
}

stop_one() {
  local dir=$1 p=$2 pid
  [ -f "$dir/$p.pid" ] || return 0
  pid=$(cat "$dir/$p.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/$p.pid"
}

stop() {
  local dir=$1
  for p in argocd-server argocd-application-controller argocd-repo-server redis tsa-port tsa fulcio rekor2-read \
    rekor2-server rekor-server trillian-log-signer trillian-log-server mariadb referrers-registry registry \
    kube-controller-manager kube-apiserver etcd; do
    stop_one "$dir" "$p"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  start) start "$1" ;;
  stop) stop "$1" ;;
  # Outage tests stop the log and start it again once they have seen Weft wait for it.
  stop-rekor) stop_one "$1" rekor-server ;;
  start-rekor)
    dir=$1
    read -r rpc port dsn < "$dir/rekor.args"
    start_rekor_server "$dir" "$("$PEERS" path rekor)" "$rpc" "$port" "$dsn" ;;
  run)
    [ "${1:-}" = "--" ] && shift
    dir=$(mktemp -d -t weft-testenv.XXXXXX)
    cleanup() {
      if [ ! -f "$dir/ready" ] && [ -d "$dir/logs" ]; then
        log "the test environment did not start; the end of its logs:"; tail -n 20 "$dir"/logs/*.log >&2 || true
      fi
      stop "$dir"
      [ -n "${WEFT_KEEP_TESTENV_DIR:-}" ] || rm -rf "$dir"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    start "$dir"
    # shellcheck disable=SC1091
    source "$dir/env"
    "$@" ;;
  *) echo "usage: $0 run -- CMD... | start DIR | stop DIR | stop-rekor DIR | start-rekor DIR" >&2; exit 2 ;;
esac
