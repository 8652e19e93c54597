"""The Debian package: built from this checkout, what lintian says of it, what it holds, that a
rebuild gives the same bytes, and a real install, upgrade, remove and purge in a throwaway root."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = ROOT / "packaging" / "debian"
LOCK = ROOT / "packaging" / "requirements.lock"
APP = "opt/edge-gateway"

needs_tools = pytest.mark.skipif(
    not (
        shutil.which("dpkg-deb")
        and shutil.which("dpkg-shlibdeps")
        and shutil.which("strip")
        and Path("/usr/bin/python3").exists()
    ),
    reason="dpkg-deb, dpkg-shlibdeps (dpkg-dev), strip and Debian's python3 build the package"
    " (make system-deps)",
)
slow = pytest.mark.timeout(900)


def _python_minor() -> str:
    out = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip()


def _build(source: Path, out: Path) -> Path:
    # lintian is run on its own below, so that its verdict is one test's failure, not all's.
    result = subprocess.run(
        ["bash", str(source / "packaging" / "debian" / "build-deb.sh"), str(out)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "LINTIAN": "0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the build reads, copied once: every build of this module sees the same sources."""
    copy = tmp_path_factory.mktemp("source")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", "*.db-*")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    for name in ("gateway", "pos_adapters", "sync", "isl_plugin", "packaging", "docs"):
        shutil.copytree(ROOT / name, copy / name, ignore=skip, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def package(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(source, tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def unpacked(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-R", str(package), str(root)], check=True)
    return root


def _field(package: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(package), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    # A dependency added to pyproject.toml without `make deb-lock` fails here, before a build.
    text = LOCK.read_text()
    assert text.startswith(f"# python: {_python_minor()}\n")
    pinned = {
        re.sub(r"[-_.]+", "-", m.group(1)).lower(): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.M)
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pinned, f"{name}: run make deb-lock"
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 4)[-1]):
        if "==" in block:
            assert "--hash=sha256:" in block, block
    assert not {"pip", "setuptools", "wheel"} & pinned.keys()


@needs_tools
@slow
def test_lintian_accepts_the_package_at_pedantic_apart_from_justified_overrides(
    package: Path,
) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian missing (make system-deps)")
    result = subprocess.run(
        ["lintian", "--pedantic", "--fail-on", "error,warning,info,pedantic", str(package)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EWIPX]: ", line)]
    assert tags == [] and result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # Each override in the package says why, in the comment above it.
    lines = (DEBIAN / "lintian-overrides").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert number > 0 and lines[number - 1].startswith("#"), f"no reason for: {line}"


@needs_tools
def test_the_package_holds_the_application_the_unit_and_kept_configuration(
    package: Path, unpacked: Path
) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(package)], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./opt/edge-gateway/bin/edge-gateway",
        "./lib/systemd/system/edge-gateway.service",
        "./etc/edge-gateway/gateway.toml",
        "./etc/default/edge-gateway",
        "./usr/bin/edge-gateway -> /opt/edge-gateway/bin/edge-gateway",
        "./usr/share/man/man1/edge-gateway.1.gz",
        "./usr/share/doc/edge-gateway/copyright",
        "./usr/share/doc/edge-gateway/changelog.gz",
        "./usr/share/lintian/overrides/edge-gateway",
    ):
        assert path in listing
    control = unpacked / "DEBIAN"
    assert sorted((control / "conffiles").read_text().split()) == [
        "/etc/default/edge-gateway",
        "/etc/edge-gateway/gateway.toml",
    ]
    for script in ("preinst", "postinst", "prerm", "postrm"):
        assert (control / script).stat().st_mode & 0o777 == 0o755
    # md5sums: every file but the conffiles, and right.
    check = subprocess.run(
        ["md5sum", "--check", "--quiet", str(control / "md5sums")],
        cwd=unpacked, capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    summed = {line.split("  ", 1)[1] for line in (control / "md5sums").read_text().splitlines()}
    files = {
        str(p.relative_to(unpacked))
        for p in unpacked.rglob("*")
        if p.is_file() and not p.is_symlink() and p.parts[len(unpacked.parts)] != "DEBIAN"
    }
    assert files - summed == {"etc/default/edge-gateway", "etc/edge-gateway/gateway.toml"}
    # Installed-Size in KiB, about what the files take.
    size = int(_field(package, "Installed-Size"))
    total = sum((unpacked / f).stat().st_size for f in files) // 1024
    assert total <= size <= total * 1.3 + 200
    # The changelog is Debian's, compressed, for the version being packaged.
    changelog = gzip.decompress((unpacked / "usr/share/doc/edge-gateway/changelog.gz").read_bytes())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert changelog.decode().startswith(f"edge-gateway ({version}) ")
    assert _field(package, "Version") == version


@needs_tools
def test_the_bundle_is_built_for_the_python_it_depends_on_without_pip_or_setuptools(
    package: Path, unpacked: Path
) -> None:
    minor = _python_minor()
    major, low = minor.split(".")
    depends = _field(package, "Depends")
    assert f"python3 (>= {minor})" in depends and f"python3 (<< {major}.{int(low) + 1})" in depends
    assert "adduser" in depends and "libc6" in depends
    site = unpacked / APP / "lib" / f"python{minor}" / "site-packages"
    assert site.is_dir()
    assert (unpacked / APP / "bin" / "python3").readlink() == Path("/usr/bin/python3")
    names = {p.name.lower() for p in site.iterdir()}
    assert not {n for n in names if re.match(r"(pip|setuptools|wheel|_distutils_hack)\b", n)}
    assert sorted(os.listdir(unpacked / APP / "bin")) == [
        "edge-gateway", "python", "python3", f"python{minor}",
    ]  # fmt: skip
    # No byte-code shipped: postinst compiles it for the Python that is installed.
    assert not [
        p for p in (unpacked / APP).rglob("*") if p.suffix == ".pyc" or p.name == "__pycache__"
    ]
    # Every distribution in the bundle is one of the lock (with its version) or ours.
    lock = {
        (re.sub(r"[-_.]+", "_", m.group(1)).lower(), m.group(2))
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", LOCK.read_text(), re.M)
    }
    for info in site.glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
        assert (name.lower(), version) in lock or name == "edge_gateway", info.name


@needs_tools
def test_compiled_modules_are_stripped_and_scripts_name_the_bundled_interpreter(
    unpacked: Path,
) -> None:
    app = unpacked / APP
    objects = [p for p in app.rglob("*") if p.is_file() and re.search(r"\.so(\.|$)", p.name)]
    assert objects, "no compiled module: is the bundle complete?"
    for path in objects:
        sections = subprocess.run(
            ["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True
        ).stdout
        assert not re.search(r"\s\.(symtab|debug_\w+)\s", sections), f"not stripped: {path}"
    for path in app.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:2] == b"#!":
            assert path.parent == app / "bin", f"a shebang outside bin/: {path}"
            first = path.read_text().splitlines()[0]
            assert first == "#!/opt/edge-gateway/bin/python", f"{path}: {first}"
        if path.is_file() and path.suffix != ".so" and ".so." not in path.name:
            assert path.parent == app / "bin" or not path.stat().st_mode & 0o111, path


@needs_tools
def test_the_man_page_is_generated_from_the_cli_parser(unpacked: Path) -> None:
    from gateway.cli import _parser

    page = gzip.decompress(
        (unpacked / "usr/share/man/man1/edge-gateway.1.gz").read_bytes()
    ).decode()
    assert page.startswith('.\\" Generated by packaging/debian/make-manpage.py')
    assert ".TH EDGE\\-GATEWAY 1 " in page and ".SH NAME\nedge\\-gateway \\- " in page
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert f".SS {name.replace('-', chr(92) + '-')}\n" in page, name
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option.replace("-", "\\-") in page, (name, option)
    if shutil.which("man"):
        page_file = unpacked / "usr/share/man/man1/edge-gateway.1.gz"
        rendered = subprocess.run(
            ["man", "--warnings", "-l", "-Tutf8", str(page_file)],
            capture_output=True, text=True, env={**os.environ, "MANWIDTH": "80"}, timeout=60,
        )  # fmt: skip
        assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr


@needs_tools
def test_the_copyright_file_covers_every_bundled_distribution(unpacked: Path) -> None:
    text = (unpacked / "usr/share/doc/edge-gateway/copyright").read_text()
    assert text.startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    )
    site = next((unpacked / APP / "lib").glob("python3.*/site-packages"))
    for info in site.glob("*.dist-info"):
        if not info.name.startswith("edge_gateway-"):
            assert f"/{info.name}/*" in text, info.name
    licenses = re.findall(r"^License: (.+)$", text, re.M)
    assert licenses and all(name.strip() for name in licenses)
    # Licenses Debian ships are referred to, not copied (lintian checks the Apache one too).
    assert "/usr/share/common-licenses/Apache-2.0" in text


@needs_tools
def test_the_unpacked_application_runs(unpacked: Path) -> None:
    python = unpacked / APP / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "gateway", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("edge-gateway ")


@needs_tools
@slow
def test_a_rebuild_gives_the_same_bytes(package: Path, source: Path, tmp_path: Path) -> None:
    # Same sources, same lock, same changelog date: the same .deb, byte for byte.
    again = _build(source, tmp_path)
    if again.read_bytes() != package.read_bytes():
        first, second = tmp_path / "first", tmp_path / "second"
        subprocess.run(["dpkg-deb", "-R", str(package), str(first)], check=True)
        subprocess.run(["dpkg-deb", "-R", str(again), str(second)], check=True)
        diff = subprocess.run(
            ["diff", "-rq", "--no-dereference", str(first), str(second)],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        listings = [
            subprocess.run(["dpkg-deb", "-c", str(p)], capture_output=True, text=True).stdout
            for p in (package, again)
        ]
        pytest.fail(
            f"two builds differ:\n{diff[:3000]}\nlistings equal: {listings[0] == listings[1]}"
        )


# Runs inside the throwaway root, as root, with the root's own python3: install, upgrade in
# place, remove, purge, and what each leaves. Prints a JSON report.
INSIDE = r"""
import grp, importlib.util, json, os, pwd, shutil, sqlite3, stat, subprocess, sys
from pathlib import Path

deb = sys.argv[1]
APP = Path("/opt/edge-gateway")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/edge-gateway.service")
report = {}

def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return {"code": r.returncode, "out": r.stdout, "err": r.stderr}

def owner(path):
    st = os.lstat(path)
    mode = oct(stat.S_IMODE(st.st_mode))
    return [pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, mode]

def uncompiled():
    missing, total = [], 0
    for base, dirs, files in os.walk(APP / "lib"):
        for name in files:
            if name.endswith(".py"):
                total += 1
                if not os.path.exists(importlib.util.cache_from_source(os.path.join(base, name))):
                    missing.append(os.path.join(base, name))
    return {"total": total, "missing": missing[:20]}

def exists(*paths):
    return {str(p): os.path.lexists(p) for p in paths}

def account():
    try:
        user = pwd.getpwnam("edge-gateway")
    except KeyError:
        user = None
    try:
        group = grp.getgrnam("edge-gateway").gr_gid
    except KeyError:
        group = None
    return {
        "uid": user.pw_uid if user else None, "gid": group,
        "home": user.pw_dir if user else None, "shell": user.pw_shell if user else None,
        "groups": sorted(g.gr_name for g in grp.getgrall() if "edge-gateway" in g.gr_mem),
    }

# 1. A fresh install.
report["install"] = run("dpkg", "-i", deb)
report["account"] = account()
report["modes"] = {p: owner(p) for p in (
    "/var/lib/edge-gateway", "/etc/edge-gateway/gateway.toml", "/etc/default/edge-gateway",
    "/lib/systemd/system/edge-gateway.service", "/opt/edge-gateway/bin/edge-gateway",
)}
report["enabled"] = WANTS.is_symlink()
report["compiled"] = uncompiled()
report["help"] = run("/usr/bin/edge-gateway", "--help")
report["version"] = run("/usr/bin/edge-gateway", "--version")
report["native"] = run(str(APP / "bin/python"), "-c",
    "import _cffi_backend, pydantic_core._pydantic_core, cryptography.hazmat.bindings._rust")
report["no_pip"] = run(str(APP / "bin/python"), "-c", "import pip")["code"] != 0
report["no_setuptools"] = run(str(APP / "bin/python"), "-c", "import setuptools")["code"] != 0
report["man"] = run("man", "-w", "edge-gateway")
if shutil.which("systemd-analyze"):
    report["verify"] = run("systemd-analyze", "verify", "/lib/systemd/system/edge-gateway.service")

# 2. Store IT sets the store id; the same package installed again runs the upgrade path
#    (preinst/prerm upgrade, postinst configure). A .pyc a root run left must not survive.
config = Path("/etc/edge-gateway/gateway.toml")
config.write_text(config.read_text().replace('store_id = "CHANGE-ME"', 'store_id = "store-042"'))
package_dir = next(APP.glob("lib/python3*/site-packages/gateway"))
stray = package_dir / "__pycache__" / "stray.cpython-311.pyc"
stray.write_bytes(b"stale")
report["upgrade"] = run("dpkg", "-i", deb)
report["stray_after_upgrade"] = stray.exists()
report["compiled_after_upgrade"] = uncompiled()

# 3. What the running service would have made: its database, and a token file given to it.
account_ids = account()
data = Path("/var/lib/edge-gateway/gateway.db")
with sqlite3.connect(data) as db:
    db.execute("CREATE TABLE outbox (event_id TEXT PRIMARY KEY)")
    db.executemany("INSERT INTO outbox VALUES (?)", [("01J000000000000000000000A1",), ("B2",)])
db.close()
os.chown(data, account_ids["uid"], account_ids["gid"])
token = Path("/etc/edge-gateway/central-token")
token.write_text("secret\n")
os.chown(token, 0, account_ids["gid"])
token.chmod(0o640)

# 4. Remove: the application goes, data, user, configuration stay.
report["remove"] = run("dpkg", "-r", "edge-gateway")
report["after_remove"] = {
    **exists(APP, data, token, config, "/lib/systemd/system/edge-gateway.service"),
    **exists("/usr/bin/edge-gateway"),
    "account": account(),
}

# 5. Purge: data, user and group, the service's files in /etc, the unit's enablement: gone.
report["purge"] = run("dpkg", "--purge", "edge-gateway")
report["after_purge"] = {
    **exists(APP, "/var/lib/edge-gateway", "/etc/edge-gateway", "/etc/default/edge-gateway", WANTS),
    "account": account(),
    "dialout": grp.getgrnam("dialout").gr_mem,
    "status": run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "edge-gateway"),
}
print(json.dumps(report))
"""

# Outside: a private mount namespace, an overlay whose lower layer is this machine's root and
# whose upper layer is a tmpfs, and a chroot into it. dpkg, adduser and the maintainer scripts
# run for real (no systemd runs in there: /run/systemd/system is absent, as in a container);
# every change lands in the tmpfs, which goes with the namespace. Exit 77: cannot set it up.
OUTSIDE = r"""
set -eu
work=$1
layers=$work/layers
mkdir -p "$layers"
mount -t tmpfs tmpfs "$layers" || exit 77
mkdir -p "$layers/upper" "$layers/work" "$layers/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" \
    "$layers/root" || exit 77
mount -t proc proc "$layers/root/proc"
mount --rbind /dev "$layers/root/dev"
status=0
chroot "$layers/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    /usr/bin/python3 "$work/inside.py" "$work/edge-gateway.deb" >"$work/report.json" || status=$?
# What the whole sequence left in the root, with owners (numeric).
(cd "$layers/upper" && find . -xdev -printf '%U %G %y %P\n') >"$work/upper.txt"
exit $status
"""


def _throwaway_root_possible() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0 and shutil.which("unshare") is not None


@needs_tools
@slow
@pytest.mark.skipif(
    not _throwaway_root_possible(),
    reason="needs root and unshare for a throwaway root; docs/operations.md says how the"
    " package was checked by hand",
)
def test_install_upgrade_remove_and_purge_in_a_throwaway_root(
    package: Path, tmp_path: Path
) -> None:
    shutil.copy(package, tmp_path / "edge-gateway.deb")
    (tmp_path / "inside.py").write_text(INSIDE)
    (tmp_path / "outside.sh").write_text(OUTSIDE)
    result = subprocess.run(
        ["unshare", "--mount", "--fork", "sh", str(tmp_path / "outside.sh"), str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode == 77:
        pytest.skip(f"no mount namespace or overlay here: {result.stderr[-500:]}")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())

    install = report["install"]
    assert install["code"] == 0, install["out"] + install["err"]
    # Enabled, not started, and told what to set.
    assert report["enabled"]
    assert "NOT started" in install["out"] and 'store_id = "CHANGE-ME"' in install["out"]
    account = report["account"]
    assert account["uid"] is not None and account["uid"] < 1000
    assert account["home"] == "/var/lib/edge-gateway" and account["shell"].endswith("nologin")
    assert "dialout" in account["groups"]
    assert report["modes"] == {
        "/var/lib/edge-gateway": ["edge-gateway", "edge-gateway", "0o750"],
        "/etc/edge-gateway/gateway.toml": ["root", "root", "0o644"],
        "/etc/default/edge-gateway": ["root", "root", "0o644"],
        "/lib/systemd/system/edge-gateway.service": ["root", "root", "0o644"],
        "/opt/edge-gateway/bin/edge-gateway": ["root", "root", "0o755"],
    }
    # Byte-compiled at install, every module.
    assert report["compiled"]["total"] > 500 and report["compiled"]["missing"] == []
    assert report["help"]["code"] == 0 and report["help"]["out"].startswith("usage: edge-gateway")
    assert report["version"]["out"].startswith("edge-gateway ")
    assert report["native"]["code"] == 0, report["native"]["err"]
    assert report["no_pip"] and report["no_setuptools"]
    assert report["man"]["out"].strip() == "/usr/share/man/man1/edge-gateway.1.gz"
    if "verify" in report:  # the installed unit, its ExecStart and its man page all present
        assert report["verify"] == {"code": 0, "out": "", "err": ""}, report["verify"]

    upgrade = report["upgrade"]
    assert upgrade["code"] == 0, upgrade["out"] + upgrade["err"]
    assert "NOT started" not in upgrade["out"]  # the store id is set now
    assert not report["stray_after_upgrade"]
    assert report["compiled_after_upgrade"]["missing"] == []

    remove = report["remove"]
    assert remove["code"] == 0, remove["out"] + remove["err"]
    after_remove = report["after_remove"]
    assert not after_remove["/opt/edge-gateway"]  # nothing left under /opt, .pyc included
    assert after_remove["/var/lib/edge-gateway/gateway.db"]  # data kept
    assert "holds 2 events central has not received yet" in remove["out"]
    assert (
        after_remove["/etc/edge-gateway/gateway.toml"]
        and after_remove["/etc/edge-gateway/central-token"]
    )
    assert not after_remove["/lib/systemd/system/edge-gateway.service"]
    assert not after_remove["/usr/bin/edge-gateway"]
    assert after_remove["account"]["uid"] == account["uid"]  # the user stays with its data

    purge = report["purge"]
    assert purge["code"] == 0, purge["out"] + purge["err"]
    after_purge = report["after_purge"]
    assert not any(v for k, v in after_purge.items() if k.startswith("/")), after_purge
    assert after_purge["account"] == {
        "uid": None,
        "gid": None,
        "home": None,
        "shell": None,
        "groups": [],
    }
    assert "edge-gateway" not in after_purge["dialout"]
    assert after_purge["status"]["out"] == ""  # dpkg forgot the package
    # Nothing in the whole root is left owned by the removed uid or gid, and nothing of the
    # package is left but what dpkg itself and the tools this test ran keep.
    leftovers = []
    for line in (tmp_path / "upper.txt").read_text().splitlines():
        uid, gid, _kind, path = line.split(" ", 3)
        assert int(uid) != account["uid"] and int(gid) != account["gid"], line
        if "edge-gateway" in path and not path.startswith(("var/cache/man/", "var/lib/dpkg/")):
            leftovers.append(path)
    assert leftovers == []
