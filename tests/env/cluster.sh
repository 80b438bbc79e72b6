#!/usr/bin/env bash
# A real test cluster for Weft: etcd and kube-apiserver (built by peers.sh) on 127.0.0.1, with Weft's
# CRDs and Argo CD's Application/AppProject CRDs installed, and a kubeconfig written.
#
#   tests/env/cluster.sh run -- CMD [ARG...]   start, run CMD with the cluster's environment, stop (also on failure)
#   tests/env/cluster.sh start DIR             start in the background; DIR/env holds the environment to source
#   tests/env/cluster.sh stop DIR              stop what `start DIR` started
#
# The environment: KUBECONFIG and WEFT_TEST_KUBECONFIG (admin token), WEFT_TEST_RESTRICTED_TOKEN (a user
# with no permissions, for RBAC tests), WEFT_TEST_APISERVER (URL), WEFT_TEST_CLUSTER_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEERS="$HERE/peers.sh"

log() { printf '[cluster] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.5
  done
}

start() {
  local dir=$1 start_s bin_etcd bin_api bin_kubectl
  start_s=$(date +%s)
  mkdir -p "$dir"/{certs,etcd,logs}
  bin_etcd=$("$PEERS" path etcd)/etcd
  bin_api=$("$PEERS" path kube-apiserver)/kube-apiserver
  bin_kubectl=$("$PEERS" path kubectl)/kubectl

  # Certificates: a CA, the apiserver's serving certificate, and the service-account key pair.
  (
    cd "$dir/certs"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=weft-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile ext.cnf 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  local admin_token restricted_token
  admin_token=$(openssl rand -hex 24)
  restricted_token=$(openssl rand -hex 24)
  printf '%s,weft-test-admin,1,"system:masters"\n%s,weft-test-restricted,2\n' "$admin_token" "$restricted_token" > "$dir/certs/tokens.csv"

  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  "$bin_etcd" --data-dir "$dir/etcd" --name weft-test \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "weft-test=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn \
    > "$dir/logs/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"
  wait_for 60 "etcd" curl -sf "http://127.0.0.1:$etcd_port/health"

  "$bin_api" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/certs/apiserver.crt" --tls-private-key-file "$dir/certs/apiserver.key" \
    --client-ca-file "$dir/certs/ca.crt" --cert-dir "$dir/certs" \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$dir/certs/sa.pub" \
    --service-account-signing-key-file "$dir/certs/sa.key" --service-cluster-ip-range 10.0.0.0/24 \
    --token-auth-file "$dir/certs/tokens.csv" --authorization-mode RBAC \
    --disable-admission-plugins ServiceAccount --enable-priority-and-fairness=false \
    > "$dir/logs/kube-apiserver.log" 2>&1 &
  echo $! > "$dir/kube-apiserver.pid"

  local server="https://127.0.0.1:$api_port"
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
    -f "$argocd_crds/application-crd.yaml" -f "$argocd_crds/appproject-crd.yaml" -f "$ROOT/crds/" \
    > "$dir/logs/setup.log" 2>&1 || { cat "$dir/logs/setup.log" >&2; return 1; }
  KUBECONFIG="$dir/kubeconfig" "$bin_kubectl" wait --for condition=established --timeout 60s \
    crd/applications.argoproj.io crd/appprojects.argoproj.io \
    crd/integrityprofiles.weft.dev crd/applicationprovenances.weft.dev >> "$dir/logs/setup.log" 2>&1

  cat > "$dir/env" <<EOF
export KUBECONFIG="$dir/kubeconfig"
export WEFT_TEST_KUBECONFIG="$dir/kubeconfig"
export WEFT_TEST_APISERVER="$server"
export WEFT_TEST_RESTRICTED_TOKEN="$restricted_token"
export WEFT_TEST_CLUSTER_DIR="$dir"
export WEFT_TEST_KUBECTL="$bin_kubectl"
export PATH="$(dirname "$bin_kubectl"):\$PATH"
EOF
  log "kube-apiserver ready at $server in $(( $(date +%s) - start_s ))s (logs in $dir/logs)"
}

stop() {
  local dir=$1 pid
  for p in kube-apiserver etcd; do
    [ -f "$dir/$p.pid" ] || continue
    pid=$(cat "$dir/$p.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$p.pid"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  start) start "$1" ;;
  stop) stop "$1" ;;
  run)
    [ "${1:-}" = "--" ] && shift
    dir=$(mktemp -d -t weft-cluster.XXXXXX)
    cleanup() {
      if [ ! -f "$dir/env" ] && [ -d "$dir/logs" ]; then
        log "the cluster did not start; the end of its logs:"; tail -n 20 "$dir"/logs/*.log >&2 || true
      fi
      stop "$dir"
      [ -n "${WEFT_KEEP_CLUSTER_DIR:-}" ] || rm -rf "$dir"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    start "$dir"
    # shellcheck disable=SC1091
    source "$dir/env"
    "$@" ;;
  *) echo "usage: $0 run -- CMD... | start DIR | stop DIR" >&2; exit 2 ;;
esac
