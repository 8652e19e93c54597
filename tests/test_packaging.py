"""The Debian package: built from this checkout, its contents, and the unpacked application."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

needs_tools = pytest.mark.skipif(
    not (
        shutil.which("dpkg-deb") and shutil.which("fakeroot") and Path("/usr/bin/python3").exists()
    ),
    reason="dpkg-deb, fakeroot and Debian's python3 are needed to build the package",
)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run(
        ["bash", str(ROOT / "packaging" / "debian" / "build-deb.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return Path(result.stdout.strip().splitlines()[-1])


@needs_tools
def test_the_package_holds_the_application_the_unit_and_a_kept_configuration(
    package: Path,
) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(package)], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./opt/edge-gateway/bin/edge-gateway",
        "./lib/systemd/system/edge-gateway.service",
        "./etc/edge-gateway/gateway.toml",
        "./usr/bin/edge-gateway -> /opt/edge-gateway/bin/edge-gateway",
    ):
        assert path in listing
    control = subprocess.run(
        ["dpkg-deb", "-I", str(package)], capture_output=True, text=True, check=True
    ).stdout
    assert "Package: edge-gateway" in control and "postinst" in control
    conffiles = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(package)], capture_output=True, check=True
    ).stdout
    assert b"conffiles" in conffiles  # the configuration is kept on upgrade


@needs_tools
def test_the_unpacked_application_runs(package: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(package), str(tmp_path)], check=True)
    python = tmp_path / "opt" / "edge-gateway" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "gateway", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("edge-gateway ")
    script = (tmp_path / "opt" / "edge-gateway" / "bin" / "edge-gateway").read_text()
    assert script.startswith("#!/opt/edge-gateway/bin/python")  # the installed path, not ours
