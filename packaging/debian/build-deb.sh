#!/usr/bin/env bash
# Build the Debian package, then check it with lintian (`make deb`). Usage:
#   build-deb.sh [OUTPUT_DIR]          prints the path of the .deb on its last line
# Environment:
#   DEB_PYTHON       the Python the bundle is built for (default /usr/bin/python3, Debian's:
#                    the package Depends on exactly its minor version)
#   LINTIAN=0        skip lintian (default: run it, fail on any tag not overridden)
#   SOURCE_DATE_EPOCH  default: the date of packaging/debian/changelog's latest entry
#
# What goes in: the application and its dependencies in a virtual environment under
# /opt/edge-gateway, without pip or setuptools, installed from packaging/requirements.lock
# (hashes, wheels only) so that two builds of one commit are the same bytes; extension modules
# stripped; edge-gateway(1) generated from the CLI's parser; a copyright file generated from
# the bundle's metadata; the systemd unit; /etc/edge-gateway/gateway.toml and
# /etc/default/edge-gateway as conffiles; maintainer scripts with dh_installsystemd's snippets.
# No .pyc is shipped: postinst compiles, prerm removes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-dist}
PY=${DEB_PYTHON:-/usr/bin/python3}
PKG=edge-gateway
APP=/opt/edge-gateway
HERE=packaging/debian
LOCK=packaging/requirements.lock
BUILD_LOCK=packaging/build-requirements.lock

die() {
    echo "build-deb: $*" >&2
    exit 1
}

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
CHANGELOG_VERSION=$(dpkg-parsechangelog -l "$HERE/changelog" -S Version)
[ "$VERSION" = "$CHANGELOG_VERSION" ] ||
    die "pyproject.toml has version $VERSION, $HERE/changelog $CHANGELOG_VERSION: add an entry"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(dpkg-parsechangelog -l "$HERE/changelog" -S Timestamp)}
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYNEXT=$("$PY" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
for lock in "$LOCK" "$BUILD_LOCK"; do
    head -1 "$lock" | grep -qx "# python: $PYVER" ||
        die "$lock is not for Python $PYVER ($PY): run make deb-lock DEB_PYTHON=$PY"
done
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
ROOT="$STAGE/root"
DOC="$ROOT/usr/share/doc/$PKG"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 LC_ALL=C.UTF-8
umask 022

# 1. The project's wheel, built by a throwaway venv (setuptools and wheel from the build lock)
#    from a copy of the sources, so the checkout stays as it was.
"$PY" -m venv "$STAGE/tools"
PIP=("$STAGE/tools/bin/pip" --quiet)
"${PIP[@]}" install --require-hashes --only-binary=:all: --no-deps -r "$BUILD_LOCK"
mkdir "$STAGE/src"
cp -r pyproject.toml README.md gateway pos_adapters sync isl_plugin "$STAGE/src/"
find "$STAGE/src" -name __pycache__ -prune -exec rm -rf {} +
(cd "$STAGE/src" && "${PIP[@]}" wheel --no-deps --no-build-isolation --wheel-dir "$STAGE/wheels" .)

# 2. The bundle: a venv without pip (nor setuptools); the lock's wheels, checked against their
#    hashes and nothing else (--no-deps: the lock is complete, `pip check` proves it); then ours.
"$PY" -m venv --without-pip "$ROOT$APP"
BUNDLE=("${PIP[@]}" --python "$ROOT$APP/bin/python")
"${BUNDLE[@]}" install --no-compile --require-hashes --only-binary=:all: --no-deps -r "$LOCK"
"${BUNDLE[@]}" install --no-compile --no-deps --no-index "$STAGE"/wheels/edge_gateway-*.whl
"$STAGE/tools/bin/pip" --python "$ROOT$APP/bin/python" check >&2 ||
    die "$LOCK lacks what pyproject.toml needs (above): run make deb-lock"
[ ! -e "$ROOT$APP/lib/python$PYVER/site-packages/pip" ] || die "pip is in the bundle"
# The venv was made in the staging root: what names it must name the installed path.
grep -rlI --null "$ROOT$APP" "$ROOT$APP" | xargs -0 -r sed -i "s#$ROOT$APP#$APP#g"
# Only the interpreter links and our entry point stay in bin/: activate scripts and the
# dependencies' own commands (uvicorn, httpx, pygmentize ...) are not for this package.
find "$ROOT$APP/bin" -type f ! -name edge-gateway -delete
rm -f "$ROOT$APP"/lib/python*/site-packages/edge_gateway-*.dist-info/direct_url.json
# Extension modules and the libraries wheels carry, stripped the way dh_strip does.
find "$ROOT$APP" -type f \( -name '*.so' -o -name '*.so.*' \) -exec \
    strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +
# Under lib/ only the shared objects are run; the rest are modules and data, imported or read.
# So no executable bit on them, and no "#!/usr/bin/env python" line, which some wheels leave
# on library modules (blanked, not removed: tracebacks keep their line numbers).
find "$ROOT$APP/lib" -type f -perm /111 ! -name '*.so' ! -name '*.so.*' -exec chmod 0644 {} +
find "$ROOT$APP/lib" -type f -name '*.py' -exec awk 'FNR == 1 && /^#!/ { print FILENAME } { nextfile }' {} + |
    while IFS= read -r module; do sed -i '1s/^#!.*$//' "$module"; done
"$PY" -I -B "$HERE/refresh-records.py" "$ROOT$APP/lib/python$PYVER/site-packages"

# 3. Around it: the command, the unit, the configuration, the documentation.
install -d "$ROOT/usr/bin" "$ROOT/usr/share/man/man1" "$DOC" "$ROOT/usr/share/lintian/overrides"
ln -s "$APP/bin/edge-gateway" "$ROOT/usr/bin/edge-gateway"
install -D -m 0644 packaging/systemd/edge-gateway.service "$ROOT/lib/systemd/system/$PKG.service"
install -D -m 0644 packaging/gateway.toml "$ROOT/etc/edge-gateway/gateway.toml"
install -D -m 0644 "$HERE/default" "$ROOT/etc/default/$PKG"
"$ROOT$APP/bin/python" -I -B "$HERE/make-manpage.py" | gzip -9n >"$ROOT/usr/share/man/man1/$PKG.1.gz"
"$ROOT$APP/bin/python" -I -B "$HERE/make-copyright.py" >"$DOC/copyright"
gzip -9n <"$HERE/changelog" >"$DOC/changelog.gz"
install -m 0644 README.md docs/*.md "$DOC/"
gzip -9n "$DOC"/*.md
install -m 0644 "$HERE/lintian-overrides" "$ROOT/usr/share/lintian/overrides/$PKG"
[ -z "$(find "$ROOT" -name '*.pyc' -o -name __pycache__)" ] || die "byte-code in the package"

# 4. Control: shared-library dependencies of the compiled modules, the Python the bundle was
#    built for, sizes and checksums.
mkdir -p "$STAGE/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" >"$STAGE/shlibs/debian/control"
mapfile -d '' elves < <(find "$ROOT$APP" -type f \( -name '*.so' -o -name '*.so.*' \) -print0 | sort -z)
private=()
while IFS= read -r dir; do private+=("-l$dir"); done < <(printf '%s\n' "${elves[@]}" | sed 's#/[^/]*$##' | sort -u)
SHLIBS=$(cd "$STAGE/shlibs" && dpkg-shlibdeps -O "${private[@]}" "${elves[@]}" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$SHLIBS" ] || die "dpkg-shlibdeps found no library dependencies"
SIZE=$(find "$ROOT" -path "$ROOT/DEBIAN" -prune -o \( -type f -o -type l \) -printf '%s\n' -o -printf '0\n' |
    awk '{ total += int(($1 + 1023) / 1024); if ($1 == 0) total += 1 } END { print total }')
install -d -m 0755 "$ROOT/DEBIAN"
# procps: /bin/kill, the unit's ExecReload.
cat >"$ROOT/DEBIAN/control" <<CONTROL
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: Loyalty edge gateway maintainers <maintainers@example.invalid>
Installed-Size: $SIZE
Depends: python3 (>= $PYVER), python3 (<< $PYNEXT), adduser, procps, $SHLIBS
Recommends: systemd
Section: net
Priority: optional
Description: loyalty edge gateway for POS registers
 The gateway answers POS registers (MICROS SIM/PMS-style TCP, serial lines,
 MQTT) from a durable local store: member identification, coupons and the
 points printed on the receipt, with or without the central loyalty server.
 Every finished check is kept until central has received it.
 .
 It runs as a hardened systemd service; the application and the Python
 libraries it needs live in a virtual environment under /opt/edge-gateway.
CONTROL
printf '%s\n' "/etc/default/$PKG" /etc/edge-gateway/gateway.toml >"$ROOT/DEBIAN/conffiles"
for script in preinst postinst prerm postrm; do
    install -m 0755 "$HERE/$script" "$ROOT/DEBIAN/$script"
done
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum | grep -v -e " etc/default/$PKG\$" -e ' etc/edge-gateway/gateway.toml$') \
    >"$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/control" "$ROOT/DEBIAN/conffiles" "$ROOT/DEBIAN/md5sums"
# Every file dated like the changelog's latest entry: a rebuild is the same bytes.
find "$ROOT" -print0 | xargs -0 touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

mkdir -p "$OUT"
DEB="$OUT/${PKG}_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$ROOT" "$DEB" >/dev/null

# 5. Debian's own checks: any tag lintian shows (at --pedantic) fails the build; the ones the
#    package accepts are overridden, each with its reason, in packaging/debian/lintian-overrides.
if [ "${LINTIAN:-1}" != 0 ]; then
    command -v lintian >/dev/null || die "lintian is not installed (make system-deps)"
    lintian --pedantic --fail-on error,warning,info,pedantic "$DEB" >&2 ||
        die "lintian rejects $DEB (above)"
fi
echo "$DEB"
