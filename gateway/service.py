"""The Gateway facade: the one thing adapters call — identify, check_coupon, void_coupon,
consent, post_check, ping. It turns register requests into store work and rule decisions."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import functools
import inspect
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, cast

import structlog

from gateway import __version__
from gateway.domain.ids import new_ulid
from gateway.domain.models import (
    Balance,
    ConsentOk,
    ConsentRequest,
    Coupon,
    CouponOk,
    CouponRequest,
    CouponVoidOk,
    CouponVoidRequest,
    IdentOk,
    IdentRequest,
    MemberCard,
    OutboxEvent,
    Pong,
    PostOk,
    PostRequest,
    Refusal,
)
from gateway.domain.money import parse_amount
from gateway.domain.names import CommandName, EventType
from gateway.domain.reasons import CASHIER_TEXT, Reason
from gateway.domain.rules_doc import DEFAULT_RULES, RulesDocument
from gateway.rules.coupons import CouponUsage, coupon_refusal
from gateway.rules.settlement import LOTTERY, SettleOptions, lottery_mode

# The receipt's shape lives with the settlement; these names are the service's too.
from gateway.rules.settlement import RECEIPT_LINES as RECEIPT_LINES
from gateway.rules.settlement import RECEIPT_WIDTH as RECEIPT_WIDTH
from gateway.rules.settlement import receipt_line as receipt_line
from gateway.rules.tokens import TokenRefused, looks_like_token, verify_app_token
from gateway.store.store import CheckKey, CheckToRecord, MemberView, Store, utc_stamp
from gateway.store.writer import StorageFull, WriterClosed

log = structlog.get_logger("gateway.service")


CentralState = Literal["STANDALONE", "ONLINE", "OFFLINE"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CouponAuthorizer(Protocol):
    """Central's online coupon authorisation (sync.client.CentralClient is one)."""

    async def authorize_coupon(
        self, code: str, request: Mapping[str, Any], *, budget_s: float
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    store_id: str
    gateway_id: str = ""
    currency_decimals: int = 2
    currency: str = "EUR"
    locale: str = "en"  # receipt amounts: decimal separator, currency symbol place
    timezone: dt.tzinfo = dt.UTC
    reservation_ttl: dt.timedelta = dt.timedelta(hours=2)
    receipt_width: int = 24  # receipt.line_width: characters per receipt line
    # A scan before the register opened a check (check 0) holds the coupon only briefly.
    unbound_reservation_ttl: dt.timedelta = dt.timedelta(minutes=10)
    rules: RulesDocument = DEFAULT_RULES  # until a rules document arrives or is configured
    authorization_budget_s: float = 0.3
    offline_policy: Literal["allow", "deny", "allow_up_to"] = "allow"
    offline_max_amount: int | None = None  # minor units, for allow_up_to


LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Latency:
    """A histogram of how long the service took to answer one command (Prometheus buckets)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total_s += seconds


_Self = TypeVar("_Self", bound="Gateway")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _timed(
    command: str,
) -> Callable[[Callable[Concatenate[_Self, _P], _R]], Callable[Concatenate[_Self, _P], _R]]:
    """Time a command's service call into `stats.latency[command]`: a plain method until it
    returns, an `async` one until its coroutine is done."""

    def wrap(method: Callable[Concatenate[_Self, _P], _R]) -> Callable[Concatenate[_Self, _P], _R]:
        @functools.wraps(method)
        def timed(self: _Self, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            latency, started = self.stats.latency[command], time.perf_counter()
            try:
                result = method(self, *args, **kwargs)
            except BaseException:
                latency.observe(time.perf_counter() - started)
                raise
            if inspect.iscoroutine(result):
                return cast(_R, _observed(result, latency, started))
            latency.observe(time.perf_counter() - started)
            return result

        return timed

    return wrap


async def _observed(running: Coroutine[Any, Any, _R], latency: Latency, started: float) -> _R:
    try:
        return await running
    finally:
        latency.observe(time.perf_counter() - started)


@dataclass
class ServiceStats:
    """Requests by (command, outcome); outcome is `ok` or a reason code."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency: defaultdict[str, Latency] = field(default_factory=lambda: defaultdict(Latency))
    unknown_coupon_refs: int = 0
    refused_coupon_refs: int = 0
    offline_authorizations: int = 0
    future_business_dates: int = 0  # checks refused: business date later than tomorrow here


class Gateway:
    """Answers registers from the local store. Every method returns an answer; none raises for
    bad luck (unknown card, full disk): those become `Refusal`s with a stable reason."""

    def __init__(
        self,
        store: Store,
        options: ServiceOptions,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        central_state: Callable[[], CentralState] | None = None,
        authorizer: CouponAuthorizer | None = None,
    ) -> None:
        self.store = store
        self._authorizer = authorizer
        self.options = options
        self._clock = clock
        self._central_state = central_state
        self.stats = ServiceStats()
        self._rules: tuple[str, RulesDocument] | None = None
        self._future_date: dt.date | None = None  # the latest refused; None: no alarm
        self._settle_options = SettleOptions(
            store_id=options.store_id,
            currency_decimals=options.currency_decimals,
            currency=options.currency,
            locale=options.locale,
            receipt_width=options.receipt_width,
        )

    # ---- helpers -------------------------------------------------------------------------------

    def _event(self, kind: str, payload: dict[str, Any], now: dt.datetime) -> OutboxEvent:
        return OutboxEvent(
            event_id=new_ulid(),
            type=kind,
            occurred_at=utc_stamp(now),
            payload={"store_id": self.options.store_id, **payload},
        )

    def _count(self, command: str, outcome: str) -> None:
        self.stats.requests[(command, outcome)] += 1

    def _refuse(self, command: str, reason: Reason, message: str | None = None) -> Refusal:
        self._count(command, reason.value)
        return Refusal(reason, message or CASHIER_TEXT.get(reason, reason.value))

    def latest_business_date(self) -> dt.date:
        """Tomorrow in the store's time zone: no register may post a later business date."""
        return self._clock().astimezone(self.options.timezone).date() + dt.timedelta(days=1)

    def note_future_business_date(self, date: dt.date) -> None:
        """A register sent a business date later than tomorrow by this gateway's clock: every
        such check is refused, so a clock behind the registers' is an alarm, logged once."""
        self.stats.future_business_dates += 1
        if self._future_date is None:
            log.error(
                "business_date_refused",
                alarm=True,
                business_date=date.isoformat(),
                gateway_date=self._today().isoformat(),
                hint="the registers' business date is later than tomorrow by this machine's"
                " clock: checks are refused until the clock is right; check its time sync (NTP)",
            )
        self._future_date = max(date, self._future_date or date)

    def clock_skew(self) -> dict[str, Any] | None:
        """The suspected clock skew (registers ahead of this gateway), or None. Clears, with a
        log line, once this gateway's clock has caught up with the dates it refused."""
        if self._future_date is None:
            return None
        if self._future_date <= self.latest_business_date():
            log.warning("business_date_accepted_again", business_date=self._future_date.isoformat())
            self._future_date = None
            return None
        return {
            "suspected": True,
            "register_business_date": self._future_date.isoformat(),
            "gateway_date": self._today().isoformat(),
            "refused_checks": self.stats.future_business_dates,
        }

    def _today(self) -> dt.date:
        return self._clock().astimezone(self.options.timezone).date()

    def rules(self, now: dt.datetime) -> RulesDocument:
        """The rules in force at `now`: the latest effective document in the store (central's,
        or the configured file's), parsed once per version; the defaults when there is none."""
        found = self.store.active_rules(now)
        if found is None:
            return self.options.rules
        version, text = found
        if self._rules is None or self._rules[0] != version:
            self._rules = (version, RulesDocument.model_validate_json(text))
        return self._rules[1]

    @staticmethod
    def lottery_paused(view: MemberView, rules: RulesDocument) -> bool:
        """Paused here (`edge-gateway pause lottery`) or by central in the rules document."""
        return view.lottery_paused or rules.paused(LOTTERY)

    @staticmethod
    def lottery_mode(view: MemberView, rules: RulesDocument = DEFAULT_RULES) -> bool:
        return lottery_mode(view.member, view.lottery_paused, rules)

    # ---- the commands --------------------------------------------------------------------------

    async def ping(self) -> Pong:
        return self.ping_now()

    @_timed(CommandName.PING)
    def ping_now(self) -> Pong:
        self._count(CommandName.PING, "ok")
        state: CentralState = self._central_state() if self._central_state else "STANDALONE"
        return Pong(state=state, version=__version__)

    async def identify(self, request: IdentRequest) -> IdentOk | Refusal:
        return self.identify_now(request)

    @_timed(CommandName.IDENT)
    def identify_now(self, request: IdentRequest) -> IdentOk | Refusal:
        """IDENT answers from memory and the lookup connection: it never waits, so the SIM
        transports answer it inside their read callback."""
        now = self._clock()
        rules = self.rules(now)
        view = self.store.member_by_identifier(request.token)
        if view is None and looks_like_token(request.token):
            try:
                token = verify_app_token(
                    request.token, rules.app_token_keys, now, rules.token_clock_skew_s
                )
            except TokenRefused as refused:
                return self._refuse(CommandName.IDENT, refused.reason, refused.message)
            view = self.store.member(token.member_id)
            if view is None:  # a member this store has never seen: the token vouches for them
                view = MemberView(
                    member=MemberCard(
                        token.member_id, display_name=token.display_name, tier=token.tier
                    ),
                    balance=Balance(0, 0),
                    lottery_paused=False,
                )
        if view is None:
            return self._refuse(CommandName.IDENT, Reason.UNKNOWN_MEMBER)
        member = view.member
        lottery = self.lottery_mode(view, rules)
        event = self._event(
            EventType.MEMBER_IDENTIFIED,
            {
                "member_id": member.member_id,
                "wsid": request.wsid,
                "rvc": request.rvc,
                "check": request.check,
            },
            now,
        )
        # The register must not wait for this event's fsync; it is committed with the next
        # batch, and survives a crash of the process once queued to the WAL.
        with contextlib.suppress(WriterClosed):
            self.store.append_events_nowait([event])
        self._count(CommandName.IDENT, "ok")
        return IdentOk(
            member_id=member.member_id,
            display_name=member.display_name,
            tier=member.tier,
            points_balance=view.balance.points,
            earn_mode="LOTTERY" if lottery else "POINTS",
            message=f"Welcome {member.display_name}".strip(),
        )

    @_timed(CommandName.COUPON)
    async def check_coupon(self, request: CouponRequest) -> CouponOk | Refusal:
        now = self._clock()
        decimals = self.options.currency_decimals

        def decide(coupon: Coupon, usage: CouponUsage) -> tuple[Reason, str] | None:
            return coupon_refusal(
                coupon,
                member_id=request.member_id,
                subtotal=request.subtotal,
                decimals=decimals,
                now=now,
                usage=usage,
            )

        try:
            result = await self.store.reserve_coupon(
                code=request.code,
                wsid=request.wsid,
                check=request.check,
                member_id=request.member_id,
                now=now,
                ttl=(
                    self.options.unbound_reservation_ttl
                    if request.check == 0
                    else self.options.reservation_ttl
                ),
                decide=decide,
            )
        except StorageFull:
            return self._refuse(CommandName.COUPON, Reason.STORAGE_FULL)
        if isinstance(result, Refusal):
            return self._refuse(CommandName.COUPON, result.reason, result.message)
        coupon, ref = result.coupon, result.ref
        if result.new and self._authorizer is not None and coupon.max_redemptions == 1:
            refusal = await self._authorize_online(request, coupon, ref, now)
            if refusal is not None:
                return self._refuse(CommandName.COUPON, refusal.reason, refusal.message)
        self._count(CommandName.COUPON, "ok")
        if coupon.kind == "amount":
            value, label = coupon.value or "", f"{coupon.value} off"
        elif coupon.kind == "percent":
            value, label = coupon.value or "", f"{coupon.value}% off"
        else:
            value, label = "", "Free item"
        return CouponOk(
            coupon_ref=ref,
            kind="AMOUNT" if coupon.kind == "amount" else coupon.kind.upper(),  # type: ignore[arg-type]
            pos_discount_object=coupon.pos_discount_object,
            value=value,
            item_object=coupon.item_object,
            message=f"Coupon OK: {label}",
        )

    async def _authorize_online(
        self, request: CouponRequest, coupon: Coupon, ref: str, now: dt.datetime
    ) -> Refusal | None:
        """Ask central whether a single-use coupon is still free, within the budget; when central
        does not answer in time, the offline policy decides (DESIGN.md section 3)."""
        assert self._authorizer is not None
        options = self.options
        today = now.astimezone(options.timezone).date()
        check_part = str(request.check) if request.check else f"0:{ref}"
        key = f"{options.store_id}:{today:%Y%m%d}:{request.wsid}:{check_part}:{coupon.code}"
        body = {
            "store_id": options.store_id,
            "gateway_id": options.gateway_id,
            "member_id": request.member_id,
            "check": {
                "business_date": today.isoformat(),
                "wsid": request.wsid,
                "check": request.check,
            },
            "idempotency_key": key,
        }
        budget = options.authorization_budget_s
        try:
            answer = await asyncio.wait_for(
                self._authorizer.authorize_coupon(coupon.code, body, budget_s=budget), budget
            )
            approved = answer.get("status") == "approved"
            reason = str(answer.get("reason") or "")
        except Exception as error:  # no answer in time, or none at all: the store decides
            from gateway.links import LinkError

            self.stats.offline_authorizations += 1
            if isinstance(error, TimeoutError | LinkError):  # central slow, away or refusing
                log.info(
                    "coupon_authorization_offline", code=coupon.code, error=type(error).__name__
                )
            else:  # a bug, not central: the same policy decides, but it is said loudly
                log.exception(
                    "coupon_authorization_error", code=coupon.code, error=type(error).__name__
                )
            allowed = self._offline_allows(coupon, request.subtotal)
            if allowed:
                await self.store.note_authorization(ref, how="offline", authorization_id=None)
                return None
            await self._release(ref, request, now, reason="offline_policy")
            return Refusal(Reason.UNAVAILABLE, "Coupon check unavailable")
        if approved:
            await self.store.note_authorization(
                ref, how="online", authorization_id=str(answer.get("authorization_id") or "")
            )
            return None
        await self._release(ref, request, now, reason="declined")
        try:
            known = Reason(reason)
        except ValueError:
            known = Reason.ALREADY_REDEEMED
        return Refusal(known, CASHIER_TEXT.get(known, "Coupon refused"))

    def _offline_allows(self, coupon: Coupon, subtotal: int) -> bool:
        policy = self.options.offline_policy
        if policy == "allow":
            return True
        if policy == "deny":
            return False
        limit = self.options.offline_max_amount or 0
        decimals = self.options.currency_decimals
        if coupon.kind == "amount" and coupon.value is not None:
            return parse_amount(coupon.value, decimals) <= limit
        if coupon.kind == "percent" and coupon.value is not None:
            return subtotal * int(coupon.value) // 100 <= limit
        return False  # a free item has no amount here to weigh against the limit

    async def _release(
        self, ref: str, request: CouponRequest, now: dt.datetime, *, reason: str
    ) -> None:
        def released(ref: str, code: str) -> OutboxEvent:
            payload = {"code": code, "coupon_ref": ref, "reason": reason, "wsid": request.wsid}
            return self._event(EventType.COUPON_RELEASED, {**payload, "check": request.check}, now)

        await self.store.release_coupon(ref, now, released, released_by=reason)

    @_timed(CommandName.COUPON_VOID)
    async def void_coupon(self, request: CouponVoidRequest) -> CouponVoidOk | Refusal:
        now = self._clock()

        def released(ref: str, code: str) -> OutboxEvent:
            payload = {"code": code, "coupon_ref": ref, "reason": "void", "wsid": request.wsid}
            return self._event(EventType.COUPON_RELEASED, {**payload, "check": request.check}, now)

        try:
            refusal = await self.store.release_coupon(request.coupon_ref, now, released)
        except StorageFull:
            return self._refuse(CommandName.COUPON_VOID, Reason.STORAGE_FULL)
        if refusal is not None:
            return self._refuse(CommandName.COUPON_VOID, refusal.reason, refusal.message)
        self._count(CommandName.COUPON_VOID, "ok")
        return CouponVoidOk(request.coupon_ref)

    async def release_expired_reservations(self) -> int:
        """Free the coupons of checks that never posted (run on a timer by the daemon)."""
        now = self._clock()

        def expired(ref: str, code: str, wsid: int, check: int) -> OutboxEvent:
            payload = {"code": code, "coupon_ref": ref, "reason": "expired"}
            return self._event(
                EventType.COUPON_RELEASED, {**payload, "wsid": wsid, "check": check}, now
            )

        return await self.store.release_expired(now, expired)

    @_timed(CommandName.CONSENT)
    async def consent(self, request: ConsentRequest) -> ConsentOk | Refusal:
        view = self.store.member(request.member_id)
        if view is None:
            return self._refuse(CommandName.CONSENT, Reason.UNKNOWN_MEMBER)
        if request.join and self.lottery_paused(view, self.rules(self._clock())):
            # leaving is always possible
            return self._refuse(CommandName.CONSENT, Reason.PROGRAM_PAUSED, "Lottery paused")
        if request.join and not view.member.lottery_eligible:
            return self._refuse(
                CommandName.CONSENT, Reason.NOT_ELIGIBLE, "Not eligible for the lottery"
            )
        earn_mode = LOTTERY if request.join else "points"
        now = self._clock()
        event = self._event(
            EventType.CONSENT_CHANGED,
            {
                "member_id": request.member_id,
                "program": LOTTERY,
                "consent": request.join,
                "earn_mode": earn_mode,
                "wsid": request.wsid,
            },
            now,
        )
        try:
            await self.store.set_earn_mode(
                request.member_id, earn_mode=earn_mode, consent=request.join, event=event
            )
        except StorageFull:
            return self._refuse(CommandName.CONSENT, Reason.STORAGE_FULL)
        self._count(CommandName.CONSENT, "ok")
        return ConsentOk(request.member_id, earn_mode)  # type: ignore[arg-type]

    @_timed(CommandName.POST)
    async def post_check(self, request: PostRequest) -> PostOk | Refusal:
        now = self._clock()
        rules = self.rules(now)
        categories: dict[int, str] = {}
        if rules.category_multipliers or rules.excluded_categories:
            categories = self.store.categories_for([i.object for i in request.items])
        key = CheckKey(request.business_date, request.wsid, request.check)
        # Settled once, by the store, inside the transaction that records it (store/checks.py).
        try:
            recorded = await self.store.record_check(
                CheckToRecord(key, request, now, rules, categories, self._settle_options)
            )
        except StorageFull:
            return self._refuse(CommandName.POST, Reason.STORAGE_FULL)
        settlement = recorded.settlement
        if settlement is not None:
            if settlement.unknown_refs:
                self.stats.unknown_coupon_refs += len(settlement.unknown_refs)
                log.warning(
                    "post_unknown_coupon_refs", refs=list(settlement.unknown_refs), check=key.check
                )
            if settlement.refused_refs:
                self.stats.refused_coupon_refs += len(settlement.refused_refs)
                log.warning(
                    "post_coupon_refs_not_redeemed",
                    refs=list(settlement.refused_refs),
                    check=key.check,
                )
        self._count(CommandName.POST, "ok" if recorded.first_time else "replayed")
        return recorded.reply
