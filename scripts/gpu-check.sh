#!/usr/bin/env bash
# GPU check (BENCHMARKS.md, "GPU check"): the scorer on TensorRT FP16, TensorRT FP32, CUDA and
# CPU over the same windows; windows/s and the largest energy difference from CPU, against
# stated tolerances. `make gpu-check` runs it.
#
# Needs: an x86_64 Linux machine with an NVIDIA GPU and its driver (nvidia-smi), python3 with
# venv, cargo, and access to PyPI. Everything else goes under .venv/gpu (re-runs reuse it):
#   - the C library of the onnxruntime-gpu wheel (extracted: works whatever the local Python);
#   - the CUDA, cuBLAS, cuRAND, cuFFT, NVRTC, nvJitLink, cuDNN 9 and TensorRT 10 libraries from
#     NVIDIA's PyPI packages. tensorrt-cu1X-libs on PyPI is a stub whose build fetches the wheel
#     from NVIDIA's own package index, so that host must be reachable too.
# Then it builds examples/gpu_check.rs in release and runs it with --require-gpu: exit 0 only
# when every provider registered and stayed within tolerance.
#
# The CUDA major follows the driver: CUDA 13 libraries with onnxruntime-gpu 1.31.1 (the version
# the CPU build uses, ORT_VERSION in the Makefile) when the driver supports CUDA 13 (driver
# >= 580); otherwise CUDA 12 libraries with onnxruntime-gpu 1.26.0, the last release built for
# CUDA 12. GPU_CHECK_CUDA=12 or 13 overrides. Arguments go to the program, e.g.
#   scripts/gpu-check.sh --model models/multichannel/fixture-1 --device-id 1
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv/gpu
LOG=target/gpu-check.txt

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# --- the machine -------------------------------------------------------------------------------
[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] ||
  die "needs x86_64 Linux (onnxruntime-gpu publishes no other Linux wheels); this is $(uname -sm)"
command -v nvidia-smi >/dev/null 2>&1 ||
  die "nvidia-smi not found: this check needs an NVIDIA GPU with the NVIDIA driver installed (nvidia-smi comes with the driver)"
smi=$(nvidia-smi 2>&1) || die "nvidia-smi failed (is the driver loaded and the GPU visible?):
$smi"
gpus=$(nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true)
[[ -n $gpus ]] || die "nvidia-smi lists no GPU"
driver_cuda=$(sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' <<<"$smi" | head -n 1)
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup), then re-run"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"

cuda=${GPU_CHECK_CUDA:-}
if [[ -z $cuda ]]; then
  [[ -n $driver_cuda ]] ||
    die "cannot read the driver's CUDA version from nvidia-smi; set GPU_CHECK_CUDA=12 or 13"
  major=${driver_cuda%%.*}
  if ((major >= 13)); then
    cuda=13
  elif ((major == 12)); then
    cuda=12
  else
    die "the driver supports CUDA $driver_cuda; CUDA 12 or newer is needed (driver >= 525)"
  fi
fi

# --- pinned packages (all checked to resolve on PyPI for Python 3.8 to 3.13) ---------------------
case $cuda in
  13)
    ORT_GPU_VERSION=1.31.1
    NVIDIA_PACKAGES=(
      nvidia-cuda-runtime==13.5.37
      nvidia-cublas==13.10.0.20
      nvidia-curand==10.4.5.25
      nvidia-cufft==12.5.0.14
      nvidia-cuda-nvrtc==13.5.37
      nvidia-nvjitlink==13.5.37
      nvidia-cudnn-cu13==9.28.1.4
    )
    TENSORRT_PACKAGE="tensorrt-cu13-libs==10.16.1.11"
    ;;
  12)
    ORT_GPU_VERSION=1.26.0
    NVIDIA_PACKAGES=(
      nvidia-cuda-runtime-cu12==12.9.79
      nvidia-cublas-cu12==12.9.1.4
      nvidia-curand-cu12==10.3.10.19
      nvidia-cufft-cu12==11.4.1.4
      nvidia-cuda-nvrtc-cu12==12.9.86
      nvidia-nvjitlink-cu12==12.9.86
      nvidia-cudnn-cu12==9.28.0.42
    )
    TENSORRT_PACKAGE="tensorrt-cu12-libs==10.16.1.11"
    ;;
  *) die "GPU_CHECK_CUDA must be 12 or 13, not '$cuda'" ;;
esac

echo "== GPU check"
echo "GPU(s):          $gpus"
echo "driver CUDA:     ${driver_cuda:-unknown}; using CUDA $cuda libraries, onnxruntime-gpu $ORT_GPU_VERSION"

# --- .venv/gpu: NVIDIA libraries ------------------------------------------------------------------
# One CUDA major at a time: both ship libcudnn.so.9 in the same place.
stack="cuda $cuda, onnxruntime-gpu $ORT_GPU_VERSION"
if [[ -f $VENV/.stack && $(<"$VENV/.stack") != "$stack" ]]; then
  echo "$VENV was set up for $(<"$VENV/.stack"): recreating it"
  rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -m venv "$VENV" ||
    die "cannot create $VENV (on Debian or Ubuntu: apt-get install python3-venv)"
fi
echo "$stack" >"$VENV/.stack"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# manylinux_2_27/2_28 wheels need pip >= 20.3; distributions' venvs may start older.
"${pip[@]}" install --quiet "pip>=23"

nvidia_stamp="$VENV/.nvidia-installed"
if [[ ! -f $nvidia_stamp ]]; then
  echo "installing: ${NVIDIA_PACKAGES[*]}"
  "${pip[@]}" install --quiet --only-binary=:all: "${NVIDIA_PACKAGES[@]}"
  touch "$nvidia_stamp"
fi
tensorrt_stamp="$VENV/.tensorrt-installed"
tensorrt="installed ($TENSORRT_PACKAGE)"
if [[ ! -f $tensorrt_stamp ]]; then
  echo "installing: $TENSORRT_PACKAGE"
  if "${pip[@]}" install --quiet "$TENSORRT_PACKAGE" "${NVIDIA_PACKAGES[@]}"; then
    touch "$tensorrt_stamp"
  else
    tensorrt="NOT installed ($TENSORRT_PACKAGE failed; is NVIDIA's package index reachable?)"
    echo "gpu-check: $tensorrt; the tensorrt rows will say unavailable" >&2
  fi
fi

# --- .venv/gpu: the onnxruntime-gpu library ---------------------------------------------------
ORT_DIR="$VENV/onnxruntime-gpu-$ORT_GPU_VERSION"
ORT_LIB="$PWD/$ORT_DIR/libonnxruntime.so.$ORT_GPU_VERSION"
if [[ ! -f $ORT_LIB ]]; then
  echo "installing: onnxruntime-gpu==$ORT_GPU_VERSION (its C library and providers)"
  wheel_dir=$(mktemp -d)
  trap 'rm -rf "$wheel_dir"' EXIT
  # The wheel's libraries do not depend on the Python version: take the cp312 one.
  "${pip[@]}" download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version 3.12 --platform manylinux_2_28_x86_64 -d "$wheel_dir" \
    "onnxruntime-gpu==$ORT_GPU_VERSION"
  "$VENV/bin/python" - "$wheel_dir" "$ORT_DIR" <<'EOF'
import glob, os, sys, zipfile
wheel_dir, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(wheel_dir, "onnxruntime_gpu-*.whl"))
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime")]
    for n in names:
        path = os.path.join(out, n.rsplit("/", 1)[1])
        with open(path, "wb") as f:
            f.write(z.read(n))
        os.chmod(path, 0o755)
need = ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so",
        "libonnxruntime_providers_tensorrt.so"]
missing = [n for n in need if not os.path.exists(os.path.join(out, n))]
if missing:
    sys.exit(f"{wheel} lacks {', '.join(missing)}")
EOF
  [[ -f $ORT_LIB ]] || die "the onnxruntime-gpu wheel has no libonnxruntime.so.$ORT_GPU_VERSION"
fi

# --- library path: every folder of shared libraries the NVIDIA packages installed ------------------
mapfile -t sites < <("$VENV/bin/python" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' | sort -u)
roots=()
for site in "${sites[@]}"; do
  for d in "$site/nvidia" "$site/tensorrt_libs"; do
    [[ -d $d ]] && roots+=("$d")
  done
done
((${#roots[@]})) || die "no NVIDIA libraries under $VENV"
lib_dirs=$(find "${roots[@]}" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd: -)
export LD_LIBRARY_PATH="$PWD/$ORT_DIR:$lib_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ORT_DYLIB_PATH="$ORT_LIB"

# --- build and run ----------------------------------------------------------------------------
cargo build --release --locked --example gpu_check
bin="${CARGO_TARGET_DIR:-target}/release/examples/gpu_check"
mkdir -p "$(dirname "$LOG")"
echo
set +e
"$bin" --require-gpu "$@" | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

echo
echo "== summary"
echo "GPU(s):          $gpus"
echo "driver CUDA:     ${driver_cuda:-unknown}"
echo "onnxruntime-gpu: $ORT_GPU_VERSION ($ORT_DYLIB_PATH)"
echo "CUDA libraries:  ${NVIDIA_PACKAGES[*]}"
echo "TensorRT:        $tensorrt"
grep -E '^(unavailable|FAIL|result):' "$LOG" | sed 's/^/gpu_check:       /' || true
echo "full output:     $LOG"
if ((status == 0)); then
  echo "GPU check: PASS"
else
  echo "GPU check: FAIL (gpu_check exit $status)"
fi
exit "$status"
