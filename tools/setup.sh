#!/bin/sh
# Installs the Debian packages agt needs, only those missing. Idempotent; needs root to install.
set -e
PKGS="gcc make pkg-config luajit libluajit-5.1-dev libopenblas-dev zlib1g-dev libcurl4-openssl-dev
      lua-cjson libsodium-dev libzmq3-dev libedit-dev libcairo2 lua-busted dataset-fashion-mnist python3 tmux
      python3-numpy python3-torch
      openssh-server
      clang libclang-rt-dev
      openmpi-bin libopenmpi-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "setup: all $(echo $PKGS | wc -w) packages present"
  exit 0
fi
echo "setup: installing:$missing"
if [ "$(id -u)" != 0 ]; then
  echo "setup: not root; run 'sudo make setup' or install these packages yourself:$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || echo "setup: apt-get update failed; trying the installed package lists"
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
echo "setup: done"
