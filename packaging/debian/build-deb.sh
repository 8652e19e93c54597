#!/usr/bin/env bash
# Build the Debian package: the application in its own virtual environment under /opt, the
# systemd unit, a default configuration under /etc/edge-gateway (a conffile: kept on upgrade),
# and a post-install step that creates the service user. Usage: build-deb.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-dist}
PY=${DEB_PYTHON:-/usr/bin/python3}   # Debian's Python: the venv must point at the target's
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
ROOT="$STAGE/root"
APP=/opt/edge-gateway

mkdir -p "$ROOT$APP" "$ROOT/DEBIAN" "$ROOT/etc/edge-gateway" "$ROOT/lib/systemd/system" \
         "$ROOT/usr/bin" "$ROOT$APP/share/doc"
"$PY" -m venv "$ROOT$APP"
"$ROOT$APP/bin/pip" install --quiet --disable-pip-version-check --no-compile .
# The venv was made in the staging root: its scripts must name the installed path.
grep -rlI --null "$ROOT$APP" "$ROOT$APP/bin" | xargs -0 -r sed -i "s#$ROOT$APP#$APP#g"
sed -i "s#$ROOT$APP#$APP#g" "$ROOT$APP/pyvenv.cfg"
find "$ROOT$APP" -name '__pycache__' -prune -exec rm -rf {} +
ln -s "$APP/bin/edge-gateway" "$ROOT/usr/bin/edge-gateway"
install -m 0644 packaging/systemd/edge-gateway.service "$ROOT/lib/systemd/system/"
install -m 0640 packaging/gateway.toml "$ROOT/etc/edge-gateway/gateway.toml"
install -m 0644 docs/*.md "$ROOT$APP/share/doc/"

cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: edge-gateway
Version: $VERSION
Architecture: $ARCH
Maintainer: Loyalty edge gateway maintainers <maintainers@example.invalid>
Depends: python3 (>= 3.11), adduser
Recommends: systemd
Section: net
Priority: optional
Description: Loyalty edge gateway for POS registers
 Answers POS registers (MICROS SIM/PMS-style TCP, serial, MQTT) from a durable local
 store and forwards every check to the central loyalty server.
CONTROL
echo "/etc/edge-gateway/gateway.toml" > "$ROOT/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst "$ROOT/DEBIAN/postinst"
install -m 0755 packaging/debian/prerm "$ROOT/DEBIAN/prerm"
install -m 0755 packaging/debian/postrm "$ROOT/DEBIAN/postrm"

mkdir -p "$OUT"
fakeroot dpkg-deb --build --root-owner-group "$ROOT" "$OUT/edge-gateway_${VERSION}_${ARCH}.deb" >/dev/null
echo "$OUT/edge-gateway_${VERSION}_${ARCH}.deb"
