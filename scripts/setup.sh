#!/usr/bin/env bash
# Sets up the pip path of instseg_ros on a fresh Debian 12 machine with Python 3.11+:
#   system packages (apt) -> .venv with the ros-jazzy-* wheels, torch, open3d, spconv, ...
#   -> msg/ built with rosidl into the venv -> the package installed editable -> pip check.
# Idempotent: every step leaves a stamp keyed on its inputs, so a second run takes seconds.
#
# usage: scripts/setup.sh [--gpu]
#   --gpu   CUDA machines: CUDA torch, spconv-cu120, the full (CUDA) open3d and onnxruntime-gpu instead
#           of the CPU builds. Fails with a clear message where no NVIDIA GPU is visible.
# Last, models/clusternet_lite.onnx is exported from models/clusternet_lite.pt (once per checkpoint).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$here/.venv"
stamps="$venv/.instseg-stamps"
gpu=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$gpu" = 1 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "setup.sh --gpu: no NVIDIA driver found (nvidia-smi is missing). Run without --gpu for the CPU set-up." >&2
  exit 3
fi
if [ "$gpu" = 0 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  log "an NVIDIA GPU is visible: 'scripts/setup.sh --gpu' installs the CUDA builds instead."
fi

# --- Python ------------------------------------------------------------------------------
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      py="$(command -v "$cand")"; break
    fi
  done
fi
[ -n "$py" ] || { echo "setup.sh: Python 3.11+ is required" >&2; exit 1; }

# --- system packages -----------------------------------------------------------------------
# cmake + g++ build msg/; libusb is needed by open3d; libgl/libegl by open3d's import;
# python3-venv for the venv where the interpreter is Debian's.
apt_pkgs=(cmake g++ make libusb-1.0-0 libgomp1 libgl1 libegl1 git)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- venv + wheels -------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv with $py"
  "$py" -m venv "$venv"
fi
mkdir -p "$stamps"
vpy="$venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

req_files=(requirements.txt)
[ "$gpu" = 1 ] && req_files+=(requirements-gpu.txt)
req_key="$(cat "${req_files[@]}" | sha256sum | cut -c1-16)-gpu$gpu"
if [ "$(cat "$stamps/pip" 2>/dev/null)" != "$req_key" ]; then
  log "installing Python dependencies (first run: several minutes)"
  "$vpy" -m pip install -q --upgrade pip wheel setuptools
  if [ "$gpu" = 1 ]; then
    # CUDA builds replace the CPU ones: same package names for torch, other names for the rest.
    # onnxruntime and onnxruntime-gpu install the same module: the CPU one must go first.
    if "$vpy" -m pip show -q onnxruntime >/dev/null 2>&1; then "$vpy" -m pip uninstall -q -y onnxruntime; fi
    "$vpy" -m pip install -q -r requirements-gpu.txt
    grep -v -E '^(torch|open3d-cpu|spconv|cumm|onnxruntime)\b' requirements.txt > "$stamps/req-cpu-filtered.txt"
    "$vpy" -m pip install -q -r "$stamps/req-cpu-filtered.txt"
  else
    "$vpy" -m pip install -q -r requirements.txt
  fi
  echo "$req_key" > "$stamps/pip"
fi

# --- msg/ with rosidl into the venv --------------------------------------------------------
msg_key="$( (cat msg/*.msg CMakeLists.txt package.xml; echo "$req_key") | sha256sum | cut -c1-16)"
if [ "$(cat "$stamps/msgs" 2>/dev/null)" != "$msg_key" ]; then
  log "building msg/ with rosidl"
  site="$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  pyinc="$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  npinc="$("$vpy" -c 'import numpy; print(numpy.get_include())')"
  # The message wheels' exported CMake files name the include dirs of the machine that built
  # them (/opt/python/cp3XX-.../include/python3.X and its numpy): point them at this venv.
  { grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$venv/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
    sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$pyinc#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#$npinc#g" \
      "$f"
  done
  build="$here/build/msgs"
  rm -rf "$build"
  mkdir -p "$build"
  (
    export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
    cmake -S "$here" -B "$build" -DINSTSEG_MSGS_ONLY=ON -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$venv" \
      -DPython3_EXECUTABLE="$vpy" -DPYTHON_EXECUTABLE="$vpy" \
      -DPYTHON_INSTALL_DIR="${site#"$venv"/}" >"$build/configure.log" 2>&1 \
      || { tail -40 "$build/configure.log"; exit 1; }
    cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1 || { tail -60 "$build/build.log"; exit 1; }
    cmake --install "$build" >"$build/install.log" 2>&1 || { tail -40 "$build/install.log"; exit 1; }
  )
  # rosidl installs site-packages/instseg_ros/__init__.py; the source package's __init__ extends
  # its __path__ over this directory, which must stay a plain portion without its own __init__.
  rm -f "$site/instseg_ros/__init__.py"
  # ament's python install also writes an instseg_ros egg-info; pip would take it for this package
  # and delete the generated messages when it installs the sources editable.
  rm -rf "$site"/instseg_ros-*.egg-info
  echo "$msg_key" > "$stamps/msgs"
fi

# --- the package itself, editable ----------------------------------------------------------
setup_key="$(cat setup.py pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$stamps/editable" 2>/dev/null)" != "$setup_key" ]; then
  log "installing instseg_ros (editable)"
  "$vpy" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$setup_key" > "$stamps/editable"
fi

# --- guards --------------------------------------------------------------------------------
if ! "$vpy" -m pip check >/dev/null 2>&1; then
  "$vpy" -m pip check || true
  echo "setup.sh: 'pip check' failed (mixed ROS distributions? only ros-jazzy-* wheels may be installed)" >&2
  exit 1
fi
# The ros-jazzy-* names are meta wheels pinning the unprefixed ros-* wheels to Jazzy versions
# (pip check verifies the pins); a stray Kilted install shows as an rclpy that is not 7.x.
rclpy_version="$("$vpy" -m pip show ros-rclpy 2>/dev/null | sed -n 's/^Version: //p')"
case "$rclpy_version" in
  7.*) ;;
  *) echo "setup.sh: ros-rclpy $rclpy_version is not the Jazzy (7.x) build; rm -rf .venv and re-run" >&2; exit 1 ;;
esac
"$vpy" - <<'PY'
import rclpy, torch, open3d, spconv, onnxruntime  # noqa: F401  (fail here, not in the first test)
from instseg_ros.msg import ObjectInstanceArray  # noqa: F401
PY

# --- ClusterNet for ONNX Runtime -------------------------------------------------------------
# Built here rather than committed: it holds the same weights as the .pt (35 MB more per model version in git)
# and takes ~20 s to export. --if-missing keeps an export whose metadata names this checkpoint.
onnx_key="$( (sha256sum models/clusternet_lite.pt; cat instseg_ros/clusternet/onnx_engine.py) | sha256sum | cut -c1-16)"
if [ "$(cat "$stamps/onnx" 2>/dev/null)" != "$onnx_key" ] || [ ! -f models/clusternet_lite.onnx ]; then
  log "exporting models/clusternet_lite.onnx for ONNX Runtime (~20 s)"
  "$vpy" -m instseg_ros.cli export clusternet --checkpoint models/clusternet_lite.pt \
    --out models/clusternet_lite.onnx --if-missing >"$stamps/onnx.log" 2>&1 || { tail -20 "$stamps/onnx.log"; exit 1; }
  echo "$onnx_key" > "$stamps/onnx"
fi
log "ready: source .venv/bin/activate  (torch $("$vpy" -c 'import torch; print(torch.__version__)'))"
