#!/usr/bin/env bash
# Installs the Debian packages Parallax's stack needs, only those missing (fast when all are there).
set -euo pipefail
PKGS=(libusb-1.0-0 libgl1 libegl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
      libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
      libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0 libxcb-sync1 libxcb-shm0 libxcb-render0
      libxcb-glx0 libxcb-util1 xvfb xauth libgl1-mesa-dri ffmpeg e2fsprogs)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Python 3.11 with venv (Debian 12's python3): only when no usable 3.11 is on PATH (pyenv, deadsnakes ...)
if ! python3.11 -c "import ensurepip, venv" >/dev/null 2>&1; then
  missing+=(python3.11 python3.11-venv)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "error: missing system packages (${missing[*]}) and no apt-get to install them" >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]}"
SUDO=()
[ "$(id -u)" -ne 0 ] && SUDO=(sudo)
"${SUDO[@]}" apt-get update -qq
# env inside sudo: sudo resets the environment, which would drop DEBIAN_FRONTEND
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
if ! python3.11 -c "import ensurepip, venv" >/dev/null 2>&1; then
  echo "error: Python 3.11 with venv is required (Debian 12: apt-get install python3.11 python3.11-venv)" >&2
  exit 1
fi
