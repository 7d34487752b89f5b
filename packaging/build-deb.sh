#!/usr/bin/env bash
# Builds ebgand_<version>-1_<arch>.deb with Debian's own dpkg-deb from a built binary, the ONNX
# Runtime library `make setup-ort` fetched, the served default model, the training worker and
# the maintainer scripts in packaging/deb. `make package` runs it; see packaging/README.md.
#
#   packaging/build-deb.sh BINARY OUTDIR [DEB_VERSION]
#
# Architecture-neutral: the architecture is dpkg's (amd64, arm64), the binary and library are
# whatever was built and fetched on this machine. A cross build (packaging/README.md, arm64)
# sets DEB_ARCH, ORT_DIR (the other architecture's library), STRIP (its strip) and ASSETS_BIN (a
# binary this machine runs, for the man pages and completions).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:?usage: build-deb.sh BINARY OUTDIR [DEB_VERSION]}
out=${2:?usage: build-deb.sh BINARY OUTDIR [DEB_VERSION]}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
deb_version=${3:-${version}-1}
arch=${DEB_ARCH:-$(dpkg --print-architecture)}
ort_version=$(sed -n 's/^ORT_VERSION *:= *//p' "$root/Makefile")
ort=${ORT_DIR:-$root/.cache/onnxruntime}
strip=${STRIP:-strip}
assets_bin=${ASSETS_BIN:-$bin}
for f in "$bin" "$ort/libonnxruntime.so.$ort_version" "$ort/LICENSE" "$ort/ThirdPartyNotices.txt"; do
    [ -e "$f" ] || { echo "build-deb: missing $f (run make package, or make setup-ort)" >&2; exit 1; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
umask 022

# The program, stripped, and the ONNX Runtime it was tested with, in a private folder.
install -D -m 0755 "$bin" "$stage/usr/bin/ebgand"
"$strip" --strip-unneeded "$stage/usr/bin/ebgand"
install -D -m 0644 "$ort/libonnxruntime.so.$ort_version" "$stage/usr/lib/ebgand/libonnxruntime.so.$ort_version"
# The config names the library by this link, so an edited config (a conffile dpkg keeps on
# upgrade) still finds the library a later package ships under another version.
ln -s "libonnxruntime.so.$ort_version" "$stage/usr/lib/ebgand/libonnxruntime.so"

# The training worker (its venv is built on the box: /usr/lib/ebgand/setup-trainer).
mkdir -p "$stage/usr/lib/ebgand/trainer"
cp -r "$root/models/trainer/ebgand_trainer" "$root/models/trainer/requirements.txt" \
    "$root/models/trainer/README.md" "$stage/usr/lib/ebgand/trainer/"
find "$stage/usr/lib/ebgand/trainer" -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$root/packaging/deb/setup-trainer" "$stage/usr/lib/ebgand/setup-trainer"

# The served default model.
install -D -m 0644 -t "$stage/usr/share/ebgand/models/vibration/ebgan-1" \
    "$root/models/vibration/ebgan-1/model.onnx" "$root/models/vibration/ebgan-1/manifest.toml"

# The documented config with the installed paths: a conffile, kept on upgrade if edited.
install -d "$stage/etc/ebgand"
sed -e "s|^library = \"\"|library = \"/usr/lib/ebgand/libonnxruntime.so\"|" \
    -e 's|^outbox_dir = "state/outbox"|outbox_dir = "/var/lib/ebgand/outbox"|' \
    -e 's|^dir = "state/models"|dir = "/var/lib/ebgand/models"|' \
    -e 's|^dir = "state/capture"|dir = "/var/lib/ebgand/capture"|' \
    -e 's|^dir = "state/journal"|dir = "/var/lib/ebgand/journal"|' \
    -e 's|^python = ".venv/trainer/bin/python"|python = "/var/lib/ebgand/trainer-venv/bin/python"|' \
    -e 's|^worker = "models/trainer"|worker = "/usr/lib/ebgand/trainer"|' \
    -e 's|^cache = ""|cache = "/var/cache/ebgand/trainer"|' \
    -e 's|^models_dir = "models"|models_dir = "/var/lib/ebgand/trained"|' \
    -e 's|^path = "models/vibration/ebgan-1"|path = "/usr/share/ebgand/models/vibration/ebgan-1"|' \
    "$root/config.toml" > "$stage/etc/ebgand/ebgand.toml"
if grep -nE '"(state/|\.venv/|models/)' "$stage/etc/ebgand/ebgand.toml"; then
    echo "build-deb: the installed config still has source-tree paths (above)" >&2
    exit 1
fi

# The unit.
install -D -m 0644 "$root/systemd/ebgand.service" "$stage/lib/systemd/system/ebgand.service"

# Documentation, the man pages and shell completions (made by the binary from its clap
# definitions).
doc="$stage/usr/share/doc/ebgand"
install -D -m 0644 "$root/README.md" "$doc/README.md"
install -D -m 0644 "$root/contrib/homeassistant/README.md" "$doc/homeassistant.md"
install -D -m 0644 -t "$doc/contrib" "$root/contrib/grafana/ebgand-dashboard.json" \
    "$root/contrib/prometheus/ebgand-rules.yml"
install -D -m 0644 "$ort/ThirdPartyNotices.txt" "$doc/onnxruntime-ThirdPartyNotices.txt"
gzip -9n "$doc/onnxruntime-ThirdPartyNotices.txt"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: ebgand"
    echo
    echo "Files: *"
    echo "License: Apache-2.0"
    echo " On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0."
    echo
    echo "Files: usr/lib/ebgand/libonnxruntime.so.*"
    echo "Copyright: Microsoft Corporation"
    echo "Comment: ONNX Runtime $ort_version, from the onnxruntime wheel on PyPI; its third-party"
    echo " notices are in onnxruntime-ThirdPartyNotices.txt.gz."
    echo "License: MIT"
    sed 's/^$/./; s/^/ /' "$ort/LICENSE"
} > "$doc/copyright"
{
    echo "ebgand ($deb_version) unstable; urgency=medium"
    echo
    echo "  * Built from $(git -C "$root" describe --always --dirty 2>/dev/null || echo 'a source tree')."
    echo
    echo " -- ebgand developers <ebgand@localhost>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n > "$doc/changelog.Debian.gz"
"$assets_bin" generate-assets "$stage/usr/share"
gzip -9n "$stage"/usr/share/man/man1/*.1

# Control files.
install -d "$stage/DEBIAN"
install -m 0755 "$root/packaging/deb/postinst" "$root/packaging/deb/prerm" \
    "$root/packaging/deb/postrm" "$stage/DEBIAN/"
echo /etc/ebgand/ebgand.toml > "$stage/DEBIAN/conffiles"
(cd "$stage" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: ebgand
Version: $deb_version
Architecture: $arch
Maintainer: ebgand developers <ebgand@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.31), libgcc-s1, libstdc++6 (>= 7), adduser, procps, tzdata
Recommends: python3-venv
Suggests: mosquitto, mosquitto-clients
Section: net
Priority: optional
Description: streaming anomaly detection for machine sensors over MQTT
 ebgand subscribes to sensor streams on an MQTT broker, cuts them into
 windows, scores each window by the energy of an EBGAN autoencoder through
 ONNX Runtime, and publishes alerts when a stream's energy becomes improbable
 under its own recent healthy behaviour. It learns healthy behaviour from the
 streams, retrains and hot-swaps its models, and runs as a systemd service.
CONTROL

mkdir -p "$out"
deb="$out/ebgand_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
