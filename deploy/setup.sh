#!/usr/bin/env bash
# Set peapod up on a Debian 12 machine (as root), then run the daemon or the tests.
#   deploy/setup.sh run    install, then serve on /run/peapod/peapod.sock in the foreground
#   deploy/setup.sh test   install (with test packages), then run the test suite
#   deploy/setup.sh bench [ARGS]   install, build CRI-O and containerd 2 (deploy/build-peers.sh),
#                                  then compare peapod with them (tests/bench/compare.py ARGS)
#   deploy/setup.sh service   install, then install and start the systemd unit
#   deploy/setup.sh        install only
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
mode="${1:-install}"

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (peapod manages namespaces, mounts and cgroups)" >&2
  exit 1
fi

# System parts, all from Debian.
packages=(python3 python3-venv python3-dev util-linux iproute2 iptables runc crun conmon
  containernetworking-plugins catatonit zstd)
if [ "$mode" = test ] || [ "$mode" = bench ]; then
  packages+=(docker-registry busybox-static apache2-utils)
  # critest's stand-in images: pgrep (procps) and nnp, a setuid C program (gcc, libc6-dev)
  packages+=(procps gcc libc6-dev)
fi
if [ "$mode" = bench ]; then
  # Debian's containerd 1.6 (--runtimes ...,containerd); CRI-O's build needs pkg-config and
  # libseccomp-dev (its seccomp support is C); CRI-O runs Debian's conmon, already listed.
  packages+=(containerd pkg-config libseccomp-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The docker-registry package starts a registry on :5000; the tests run their own.
if [ "$mode" = test ] || [ "$mode" = bench ]; then
  if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
    systemctl stop docker-registry || true
  fi
fi
# A containerd this script just installed was started by its package; the benchmark runs
# its own, and an idle second daemon would only add noise. One that was there before stays.
if [[ " ${missing[*]:-} " == *" containerd "* ]] && command -v systemctl >/dev/null \
    && systemctl is-active -q containerd 2>/dev/null; then
  systemctl disable --now containerd || true
fi

# Python side: a virtualenv next to the checkout.
python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
extras=""
[ "$mode" = test ] && extras="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
# The CRI clients the tests drive (crictl, critest, kubelet), built once per pinned version.
if [ "$mode" = test ] || [ "$mode" = bench ]; then
  export PEAPOD_CLIENTS_DIR="${PEAPOD_CLIENTS_DIR:-$here/.cache/clients}"
  deploy/build-clients.sh
fi
# The peers the benchmark compares with (CRI-O, containerd 2), built once per pinned version.
if [ "$mode" = bench ]; then
  export PEAPOD_PEERS_DIR="${PEAPOD_PEERS_DIR:-$here/.cache/peers}"
  deploy/build-peers.sh
fi

# Default configuration, only where the host has none.
install -d -m 0755 /etc/peapod /etc/peapod/peapod.yaml.d
[ -e /etc/peapod/peapod.yaml ] || install -m 0644 deploy/peapod.yaml /etc/peapod/peapod.yaml
[ -e /etc/crictl.yaml ] || install -m 0644 deploy/crictl.yaml /etc/crictl.yaml
# A pod network (bridge peapod0, 10.85.0.0/16 as CRI-O's example; podman's default is
# 10.88.0.0/16) only if the host has no CNI config.
install -d -m 0755 /etc/cni/net.d
if ! compgen -G "/etc/cni/net.d/*.conflist" >/dev/null && ! compgen -G "/etc/cni/net.d/*.conf" >/dev/null \
    && ! compgen -G "/etc/cni/net.d/*.json" >/dev/null; then
  install -m 0644 deploy/cni/10-peapod.conflist /etc/cni/net.d/10-peapod.conflist
fi

case "$mode" in
  run)
    exec .venv/bin/peapod run
    ;;
  test)
    set +e
    .venv/bin/python -m pytest -q -p no:cacheprovider "${@:2}"
    rc=$?
    set -e
    if [ "$rc" = 5 ]; then
      echo "setup.sh: pytest collected no tests; failing" >&2
      exit 1
    fi
    exit "$rc"
    ;;
  bench)
    if [[ " ${*:2} " == *" --profile "* ]]; then
      .venv/bin/pip install -q --disable-pip-version-check py-spy
    fi
    exec .venv/bin/python tests/bench/compare.py "${@:2}"
    ;;
  install)
    echo "peapod installed: .venv/bin/peapod run"
    ;;
  service)
    .venv/bin/peapod unit > /etc/systemd/system/peapod.service  # ExecStart: this .venv's peapod
    systemctl daemon-reload
    systemctl enable --now peapod.service
    ;;
  *)
    echo "usage: deploy/setup.sh [run|test|bench|install|service]" >&2
    exit 2
    ;;
esac
