#!/usr/bin/env bash
# The arm64 package, cross-built on an amd64 Debian 12 machine, and checked under qemu-user:
#
#   sudo dpkg --add-architecture arm64 && sudo apt-get update
#   sudo apt-get install --no-install-recommends rustc-web cargo-web libstd-rust-web-dev:arm64 \
#       binutils-aarch64-linux-gnu qemu-user libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64
#   make package-arm64
#
# rustup cannot fetch Rust's aarch64 standard library here, but Debian's security archive has
# `rustc-web` (rustc 1.96) with the same version's standard library for arm64
# (`libstd-rust-web-dev:arm64`). zig (from PyPI, as for amd64) links against glibc 2.31; ONNX
# Runtime comes from the aarch64 `onnxruntime` wheel. The check runs the arm64 binary under
# qemu-aarch64 (as root: see below): `--version`, then `score` on a CWRU recording with the package's model and the
# arm64 ONNX Runtime, whose energies must match the amd64 build's to 1e-4 (relative).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ort_version=$(sed -n 's/^ORT_VERSION *:= *//p' Makefile)
ort="$root/.cache/onnxruntime-arm64"
missing=()
[ -x /usr/bin/rustc ] && /usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu >/dev/null 2>&1 \
    && [ -n "$(ls "$(/usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu)"/libstd-*.rlib 2>/dev/null)" ] \
    || missing+=("rustc-web cargo-web libstd-rust-web-dev:arm64")
command -v aarch64-linux-gnu-strip >/dev/null || missing+=(binutils-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
[ -e /lib/ld-linux-aarch64.so.1 ] || missing+=("libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64")
if [ ${#missing[@]} -gt 0 ]; then
    echo "cross-arm64: missing ${missing[*]}; see the header of $0" >&2
    exit 1
fi

if [ ! -e "$ort/libonnxruntime.so.$ort_version" ]; then
    mkdir -p "$ort/wheel"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --python-version 3.11 -d "$ort/wheel" "onnxruntime==$ort_version"
    python3 - "$ort" <<'PY'
import glob, sys, zipfile
out = sys.argv[1]
z = zipfile.ZipFile(glob.glob(out + "/wheel/onnxruntime-*aarch64.whl")[0])
for n in z.namelist():
    if n.startswith("onnxruntime/capi/lib") or n in ("onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"):
        open(out + "/" + n.rsplit("/", 1)[1], "wb").write(z.read(n))
PY
    rm -rf "$ort/wheel"
fi

# Debian's toolchain first on PATH: its rustc has the arm64 standard library.
PATH="$root/.venv/zig/bin:/usr/bin:/bin:$PATH" CARGO_ZIGBUILD_PYTHON_PATH="$root/.venv/zig/bin/python" \
    CARGO_TARGET_DIR="$root/target/arm64" \
    cargo zigbuild --release --locked --target aarch64-unknown-linux-gnu.2.31
bin="$root/target/arm64/aarch64-unknown-linux-gnu/release/ebgand"

# The man pages and completions come from the amd64 build (the same clap definitions).
host_bin="$root/target/$(rustc -vV | sed -n 's/^host: //p')/release/ebgand"
[ -x "$host_bin" ] || { echo "cross-arm64: run make package first (for $host_bin)" >&2; exit 1; }
deb=$(DEB_ARCH=arm64 ORT_DIR="$ort" STRIP=aarch64-linux-gnu-strip ASSETS_BIN="$host_bin" \
    packaging/build-deb.sh "$bin" "$root/target/debian")

# Under qemu-user: the packaged binary and library, unpacked.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
dpkg-deb -x "$deb" "$check"
# ONNX Runtime's cpuinfo reads /proc/cpuinfo at load; under qemu-user that is the host's x86
# one, and it crashes on it. The check runs in a mount namespace with an arm64 one (two
# Cortex-A72 cores, a Raspberry Pi 4's) over it: root only.
for n in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$n"
done > "$check/cpuinfo"
run() {
    unshare --mount sh -c 'mount --bind "$0" /proc/cpuinfo && exec qemu-aarch64 -L / "$@"' \
        "$check/cpuinfo" "$check/usr/bin/ebgand" "$@"
}
run --version
recording="$root/../shared/data/cwru/1797_IR_7_DE12.npz"
energies() { sed -n 's/.*"energy":\([^,]*\),.*/\1/p'; }
ORT_DYLIB_PATH="$check/usr/lib/ebgand/libonnxruntime.so.$ort_version" \
    run score --judge threshold --model "$check/usr/share/ebgand/models/vibration/ebgan-1" \
    --key DE "$recording" 2>/dev/null | energies > "$check/arm64.txt"
"$host_bin" score --judge threshold --model models/vibration/ebgan-1 --key DE "$recording" \
    2>/dev/null | energies > "$check/amd64.txt"
python3 - "$check/arm64.txt" "$check/amd64.txt" <<'PY'
import sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
assert len(a) == len(b) > 100, (len(a), len(b))
worst = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))
assert worst < 1e-4, worst
print(f"arm64 under qemu: {len(a)} windows, energies within {worst:.1e} (relative) of amd64")
PY
echo "$deb"
