"""Answers of central the gateway does not take at their word: a cursor that does not move, a
snapshot that would wipe the cache, a certificate nobody vouches for, a token file others read.

Against the reference central over real HTTP, or (where it cannot give the answer) a small real
HTTP(S) server in this process; real SQLite files; the CLI as a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import inspect
import io
import ipaddress
import os
import re
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import events
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gateway_process import cli
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from waiting import until

from gateway.config import CentralSettings
from gateway.store.store import Store
from sync.central import ReferenceConfig, ReferenceServer
from sync.client import CentralClient, token_file_problem
from sync.refresher import Refresher

SAMPLE_MEMBERS = 5  # gateway/sample/members.jsonl


# ---- helpers --------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the test stops it, not a signal


@contextlib.asynccontextmanager
async def serve(app: Starlette, **tls: Any) -> AsyncIterator[int]:
    """`app` on a free port of 127.0.0.1 (HTTPS when `tls` has uvicorn's ssl_* settings)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        log_config=None,
        lifespan="off",
        date_header=False,
        **tls,
    )  # fmt: skip
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the test server did not start"
        await asyncio.sleep(0.01)
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


def central_settings(url: str, **more: Any) -> CentralSettings:
    return CentralSettings(url=url, timeout_s=5.0, **more)


def client_of(server: ReferenceServer) -> CentralClient:
    return CentralClient(central_settings(server.url), store_id="S001", gateway_id="gw")


@contextlib.asynccontextmanager
async def central_with(
    config: ReferenceConfig,
) -> AsyncIterator[tuple[ReferenceServer, CentralClient]]:
    """The reference central as `config` has it, and a client of it."""
    async with ReferenceServer(config) as central, client_of(central) as client:
        yield central, client


# ---- 1. a cursor that does not move -----------------------------------------------------------


class StickyFront:
    """A real HTTP front for the reference central. While `stuck`, every page after the first
    comes back with `has_more` and the very cursor it was asked with, as a buggy central does."""

    def __init__(self, upstream: str) -> None:
        self.stuck = True
        self.requests = 0
        self.upstream = httpx.AsyncClient(base_url=upstream, timeout=10)
        self.app = Starlette(routes=[Route("/v1/stores/{store}/changes", self.changes)])

    async def changes(self, request: Request) -> Response:
        self.requests += 1
        headers = {
            k: v for k, v in request.headers.items() if k in ("x-gateway-id", "authorization")
        }
        answer = await self.upstream.get(
            request.url.path, params=request.query_params, headers=headers
        )
        body = answer.json()
        cursor = request.query_params.get("cursor", "")
        if self.stuck and cursor and answer.status_code == 200:
            body["next_cursor"], body["has_more"] = cursor, True
        return JSONResponse(body, status_code=answer.status_code)


async def test_a_cursor_that_does_not_move_is_asked_again_each_interval_not_in_a_tight_loop(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    async with ReferenceServer() as central:
        front = StickyFront(central.url)
        async with serve(front.app) as port:
            store = await Store.open(tmp_path / "gateway.db")
            client = CentralClient(
                central_settings(f"http://127.0.0.1:{port}"), store_id="S001", gateway_id="gw"
            )
            # Two records a page, so the snapshot needs several pages and sticks on the second.
            refresher = Refresher(store, client, interval_s=0.2, page_limit=2)
            running = asyncio.create_task(refresher.run())
            try:
                await asyncio.sleep(1.5)
                # Before the fix: hundreds of requests a second for the same page.
                assert front.requests <= 15, front.requests
                assert refresher.stats.cursor_stalls >= 3
                assert refresher.stats.cursor_stuck
                assert refresher.stats.failures == 0  # central answers: not an outage
                assert store.get_state("snapshot_started_at") is not None  # not finished
                assert len(events(log_lines, "central_cursor_stuck")) == 1  # one alarm

                front.stuck = False
                await until(lambda: not refresher.stats.cursor_stuck, 10, "cursor moving again")
                assert len(events(log_lines, "central_cursor_moving_again")) == 1
                assert len(events(log_lines, "central_cursor_stuck")) == 1
                assert refresher.stats.snapshots == 1  # finished from where it stuck
                assert store.get_state("snapshot_started_at") is None
                assert (await store.counts()).members == SAMPLE_MEMBERS
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await client.aclose()
                await front.upstream.aclose()
                await store.close()


# ---- 2. a snapshot that would wipe the cache ---------------------------------------------------


def test_the_refreshers_default_share_is_the_configurations() -> None:
    default = inspect.signature(Refresher).parameters["max_removal_share"].default
    assert default == CentralSettings().max_removal_share == 0.5


async def test_an_empty_snapshot_keeps_the_cache_until_a_mass_removal_is_allowed(
    empty_store: Store, log_lines: io.StringIO
) -> None:
    store = empty_store
    async with central_with(ReferenceConfig(synthetic_members=40)) as (_, client):
        await Refresher(store, client).full()
    before = await store.counts()
    assert before.members == 40 + SAMPLE_MEMBERS and before.coupons > 0

    empty = ReferenceConfig(members_file=None, coupons_file=None)
    async with central_with(empty) as (_, client):
        refresher = Refresher(store, client, max_removal_share=0.5)
        await refresher.full()
        # Before the fix: every member and coupon was gone here.
        after = await store.counts()
        assert (after.members, after.coupons) == (before.members, before.coupons)
        stats = refresher.stats
        assert stats.removals_refused == 1 and stats.stale_members_removed == 0
        kept = stats.refused_removal
        assert kept is not None
        assert (kept.members, kept.cached_members) == (before.members, before.members)
        assert (kept.coupons, kept.cached_coupons) == (before.coupons, before.coupons)
        (refusal,) = events(log_lines, "snapshot_removal_refused")
        assert refusal["level"] == "error" and refusal["members"] == before.members
        assert "--allow-mass-removal" in refusal["fix"]
        assert store.get_state("snapshot_started_at") is None  # this snapshot is done

        await refresher.full(allow_mass_removal=True)
        after = await store.counts()
        assert (after.members, after.coupons) == (0, 0)
        assert stats.stale_members_removed == before.members
        assert stats.stale_coupons_removed == before.coupons
        assert stats.refused_removal is None
        assert len(events(log_lines, "snapshot_mass_removal_allowed")) == 1
        assert len(events(log_lines, "snapshot_removal_refused")) == 1


async def test_a_removal_within_the_share_goes_through_and_one_above_it_waits(
    empty_store: Store,
) -> None:
    """The limit is a share of each table: 3 of 8 members (0.375) waits under 0.3, goes under
    0.4."""
    store = empty_store
    async with central_with(ReferenceConfig(synthetic_members=3)) as (central, client):
        await Refresher(store, client).full()
        assert (await store.counts()).members == 3 + SAMPLE_MEMBERS
        admin = httpx.AsyncClient(base_url=central.admin_url, timeout=10)
        try:
            for member in ("SYN0000001", "SYN0000002", "SYN0000003"):
                (await admin.delete(f"/_admin/members/{member}")).raise_for_status()
        finally:
            await admin.aclose()
        # Their deletions are not in a snapshot: only the removal can drop them.
        refresher = Refresher(store, client, max_removal_share=0.3)
        await refresher.full()
        assert refresher.stats.removals_refused == 1  # 3 of 8 is above 0.3
        assert (await store.counts()).members == 3 + SAMPLE_MEMBERS
        refresher = Refresher(store, client, max_removal_share=0.4)
        await refresher.full()
        assert refresher.stats.removals_refused == 0
        assert refresher.stats.stale_members_removed == 3
        assert (await store.counts()).members == SAMPLE_MEMBERS


def _members(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "gateway.db")) as db:
        count: int = db.execute("SELECT COUNT(*) FROM members").fetchone()[0]
    return count


async def test_sync_full_refuses_a_mass_removal_and_prints_the_true_count_when_allowed(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    async with ReferenceServer(ReferenceConfig(synthetic_members=300)) as central:
        code, _, err = await cli(data_dir, "sync", "--full", EDGE_GATEWAY_CENTRAL__URL=central.url)
    assert code == 0, err
    assert _members(data_dir) == 300 + SAMPLE_MEMBERS

    async with ReferenceServer() as central:  # central now has the sample members only
        url = central.url
        code, _, err = await cli(data_dir, "sync", "--full", EDGE_GATEWAY_CENTRAL__URL=url)
        # Before the fix: exit 0, "0 deletions", and 300 members gone.
        assert code == 1, err
        said = " ".join(err.split())  # the console wraps long lines
        assert "kept 300 of 305 members" in said and "--allow-mass-removal" in said
        assert _members(data_dir) == 300 + SAMPLE_MEMBERS

        code, _, err = await cli(data_dir, "sync", "--allow-mass-removal")
        assert code == 2 and "goes with --full" in err

        code, _, err = await cli(
            data_dir, "sync", "--full", "--allow-mass-removal", EDGE_GATEWAY_CENTRAL__URL=url
        )
    assert code == 0, err
    assert "removed 300 members and 0 coupons the snapshot did not bring" in " ".join(err.split())
    assert _members(data_dir) == SAMPLE_MEMBERS


# ---- 3. doctor reads central's time over verified TLS only ---------------------------------


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (server and client use): (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


SKEW_S = 40  # central's clock, ahead of ours: shows the time came from that server


def _tls_central() -> Starlette:
    async def changes(request: Request) -> Response:
        return JSONResponse({"changes": [], "next_cursor": "c1", "has_more": False})

    async def clocked(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Date"] = email.utils.formatdate(time.time() + SKEW_S, usegmt=True)
        return response

    return Starlette(
        routes=[Route("/v1/stores/{store}/changes", changes)],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=clocked)],
    )


def _skew(out: str) -> float | None:
    found = re.search(r"([+-]\d+\.\d) s from central", out)
    return float(found.group(1)) if found else None


async def test_doctor_reads_centrals_time_only_over_verified_tls(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cert, key = _certificate(tmp_path, "central")
    tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    async with serve(_tls_central(), **tls) as port:
        url = f"https://127.0.0.1:{port}"
        # Not vouched for: a failure with the reason, and no clock read from it.
        code, out, err = await cli(
            data_dir, "doctor", EDGE_GATEWAY_CENTRAL__URL=url, EDGE_GATEWAY_ADMIN__PORT="0"
        )
        assert code == 1, out + err
        assert "not trusted" in out and "CERTIFICATE_VERIFY_FAILED" in out
        assert "not compared" in out and _skew(out) is None

        code, out, err = await cli(
            data_dir, "doctor", EDGE_GATEWAY_CENTRAL__URL=url,
            EDGE_GATEWAY_CENTRAL__CA_FILE=str(cert), EDGE_GATEWAY_ADMIN__PORT="0",
        )  # fmt: skip
    assert code == 0, out + err
    assert f"{url} answered" in out
    skew = _skew(out)
    assert skew is not None and -SKEW_S - 5 < skew < -SKEW_S + 5, out


async def test_doctor_reads_the_time_of_a_central_that_requires_a_client_certificate(
    tmp_path: Path,
) -> None:
    """The old second, unverified request carried no client certificate: no time at all."""
    data_dir = tmp_path / "data"
    cert, key = _certificate(tmp_path, "central")
    client_cert, client_key = _certificate(tmp_path, "store")
    tls = {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": str(client_cert),
    }
    async with serve(_tls_central(), **tls) as port:
        url = f"https://127.0.0.1:{port}"
        settings = {
            "EDGE_GATEWAY_CENTRAL__URL": url,
            "EDGE_GATEWAY_CENTRAL__CA_FILE": str(cert),
            "EDGE_GATEWAY_ADMIN__PORT": "0",
        }
        code, out, err = await cli(
            data_dir, "doctor", EDGE_GATEWAY_CENTRAL__CLIENT_CERT=str(client_cert),
            EDGE_GATEWAY_CENTRAL__CLIENT_KEY=str(client_key), **settings,
        )  # fmt: skip
        assert code == 0, out + err
        skew = _skew(out)
        assert skew is not None and -SKEW_S - 5 < skew < -SKEW_S + 5, out

        code, out, err = await cli(data_dir, "doctor", **settings)  # no client certificate
    assert code == 1, out + err
    out = " ".join(out.split())
    assert "central.client_cert" in out and "not compared" in out and _skew(out) is None


async def test_doctor_names_a_missing_ca_file_instead_of_crashing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    missing = tmp_path / "no-such-ca.pem"
    code, out, err = await cli(
        data_dir, "doctor", EDGE_GATEWAY_CENTRAL__URL="https://127.0.0.1:9",
        EDGE_GATEWAY_CENTRAL__CA_FILE=str(missing), EDGE_GATEWAY_ADMIN__PORT="0",
    )  # fmt: skip
    assert code == 1, out + err
    assert "Traceback" not in err
    assert f"central.ca_file {missing} does not exist" in out.replace("\n", "")


# ---- 4. a token file others can read -------------------------------------------------------

posix_only = pytest.mark.skipif(os.name == "nt", reason="mode bits: POSIX only")


@posix_only
async def test_a_token_file_others_can_read_is_warned_about_once_at_start(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    token = tmp_path / "central.token"
    token.write_text("s3cret\n")
    token.chmod(0o644)
    async with ReferenceServer(ReferenceConfig(token="s3cret")) as central:
        settings = central_settings(central.url, token_file=token)
        async with CentralClient(settings, store_id="S001", gateway_id="gw") as client:
            await client.changes("", 10)  # still works: a warning, not a refusal
            await client.changes("", 10)
        (warning,) = events(log_lines, "token_file_permissions")
        assert warning["level"] == "warning" and warning["file"] == str(token)
        assert warning["mode"] == "0644" and "every user" in warning["problem"]
        assert f"chmod 600 {token}" in warning["fix"]

        token.chmod(0o600)
        async with CentralClient(settings, store_id="S001", gateway_id="gw") as client:
            await client.changes("", 10)
        assert len(events(log_lines, "token_file_permissions")) == 1  # no new warning

        # `doctor` says the same, as a warning that does not fail the run.
        token.chmod(0o604)
        data_dir = tmp_path / "data"
        code, out, err = await cli(
            data_dir, "doctor", EDGE_GATEWAY_CENTRAL__URL=central.url,
            EDGE_GATEWAY_CENTRAL__TOKEN_FILE=str(token), EDGE_GATEWAY_ADMIN__PORT="0",
        )  # fmt: skip
    assert code == 0, out + err
    assert "token file" in out and "chmod 600" in out.replace("\n", "")


@posix_only
def test_group_read_is_fine_for_the_services_own_group_only(tmp_path: Path) -> None:
    token = tmp_path / "central.token"
    token.write_text("s3cret\n")
    token.chmod(0o640)  # `install -m 0640 -o root -g <the service's group>`
    os.chown(token, -1, os.getegid())
    assert token_file_problem(token) is None
    token.chmod(0o660)
    problem = token_file_problem(token)
    assert problem is not None and problem.mode == "0660"
    assert any("writable by group" in p for p in problem.problems)
    if os.geteuid() == 0:  # only root can give the file away
        token.chmod(0o640)
        os.chown(token, -1, 54321)
        problem = token_file_problem(token)
        assert problem is not None and problem.problems == ("readable by group 54321",)
        os.chown(token, 54321, os.getegid())
        problem = token_file_problem(token)
        assert problem is not None and "owned by 54321" in problem.problems[0]
        assert "chown" in problem.fix
