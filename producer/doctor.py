"""``tokensync doctor``: does this deployment keep tokensync's guarantees?

Each check answers pass, warn or fail, with what it saw and the fix. Checks:
the outbox triggers on the token table; the store's clock against this host's and
(MySQL) the server's time zone and the DROP privilege of the database user (TRUNCATE
fires no trigger on MySQL); the relay's backlog; each region's Redis
``maxmemory-policy`` (only ``noeviction`` cannot silently un-revoke) and persistence;
each region ready and fresh; each region's clock (Redis ``TIME``) against the store's;
the signing key ids each region's workers verify with against this keyring (the relay's);
whether each region signs its usage reports with a key of its own (``REGION_KEYS``);
the token topic's ``cleanup.policy``, replication factor and ``min.insync.replicas``;
in signing modes ``both`` and ``sealed``, the active seal key and the live records only
an old key (or a MAC) vouches for (``producer.seal_state``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from producer import triggers_mysql
from producer.clock import db_now_ms
from producer.doctor_kafka import kafka_checks
from producer.doctor_region_keys import region_key_checks
from producer.doctor_regions import (
    clock_check,
    region_checks,
    region_clock_checks,
    region_signers_checks,
    signers_check,
)
from producer.doctor_report import CLOCK_WARN_MS, Check, Outcome, exit_code
from producer.outbox import oldest_unpublished_ms, unpublished_count
from producer.receipts import all_regions
from producer.seal_state import seal_checks
from producer.store import TokenStore
from producer.trigger_check import missing_triggers
from shared.settings import Region, Settings

__all__ = ["Check", "Outcome", "clock_check", "exit_code", "run_checks", "signers_check"]


def run_checks(settings: Settings, store: TokenStore) -> list[Check]:
    """Every check, in order; a check that cannot run is a failure naming why."""
    checks: list[Check] = []
    checks += _guard("store", lambda: _store_checks(settings, store))
    checks += _guard("signing keys", lambda: _keyring_checks(settings))
    checks += _guard(
        "region keys", lambda: region_key_checks(settings, all_regions(settings, store))
    )
    for region in all_regions(settings, store):
        checks += _guard(f"region {region.name}", _bind(region_checks, settings, region))
        checks += _guard(
            f"region {region.name} clock", _bind(region_clock_checks(store), settings, region)
        )
        checks += _guard(
            f"region {region.name} signing keys", _bind(region_signers_checks, settings, region)
        )
    checks += _guard("kafka", lambda: kafka_checks(settings))
    checks += _guard("seal keys", lambda: seal_checks(settings))
    return checks


def _keyring_checks(settings: Settings) -> list[Check]:
    if not settings.signing_keys:
        return [
            Check(
                "signing keys",
                Outcome.FAIL,
                "no signing keys: the relay cannot sign, workers cannot verify",
                "set TOKENSYNC_SIGNING_KEYS=KEY_ID:BASE64_SECRET (the same for relay and workers)",
            )
        ]
    return [
        Check(
            "signing keys",
            Outcome.PASS,
            f"relay keyring {', '.join(sorted(settings.signing_keys))}, "
            f"signing with {settings.signing_key_id}",
        )
    ]


def _bind(
    check: Callable[[Settings, Region], list[Check]], settings: Settings, region: Region
) -> Callable[[], list[Check]]:
    return lambda: check(settings, region)


def _guard(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    try:
        return run()
    except Exception as e:  # a check that cannot run is an answer, not a crash
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [Check(name, Outcome.FAIL, f"cannot check: {first}", "make it reachable")]


def _store_checks(settings: Settings, store: TokenStore) -> list[Check]:
    checks = []
    with store.engine.connect() as conn:
        missing = missing_triggers(conn)
        before = time.time() * 1000
        db_ms = db_now_ms(conn)
        after = time.time() * 1000
        backlog = unpublished_count(conn)
        oldest = oldest_unpublished_ms(conn)
        mysql = conn.dialect.name in triggers_mysql.DIALECTS
        zone = drop = None
        if mysql:
            zone = conn.execute(sa.text("SELECT @@global.time_zone, @@system_time_zone")).one()
            drop = _mysql_can_drop(conn)
    checks.append(
        Check("triggers", Outcome.FAIL, f"missing: {', '.join(missing)}", "tokensync store repair")
        if missing
        else Check("triggers", Outcome.PASS, "every outbox trigger is in place")
    )
    skew = abs(db_ms - (before + after) / 2)
    budget_ms = settings.staleness_budget_s * 1000
    checks.append(
        Check(
            "store clock",
            Outcome.FAIL
            if skew > budget_ms
            else Outcome.WARN
            if skew > CLOCK_WARN_MS
            else Outcome.PASS,
            f"store clock {skew:.0f} ms from this host's",
            "" if skew <= CLOCK_WARN_MS else "synchronise both with NTP",
        )
    )
    age_ms = 0.0 if oldest is None else max(0.0, db_ms - oldest)
    checks.append(
        Check(
            "relay backlog",
            Outcome.FAIL if age_ms > budget_ms else Outcome.PASS,
            f"{backlog} unpublished row(s), oldest {age_ms / 1000:.1f} s old",
            "" if age_ms <= budget_ms else "start the relay (tokensync relay) and check Kafka",
        )
    )
    if zone is not None:
        utc = {"+00:00", "UTC", "Etc/UTC"}
        global_zone = zone[0] if zone[0] != "SYSTEM" else zone[1]
        checks.append(
            Check("store time zone", Outcome.PASS, f"server time zone {global_zone}")
            if global_zone in utc
            else Check(
                "store time zone",
                Outcome.WARN,
                f"server time zone {global_zone}: sessions that do not set one read and "
                "write timestamp columns in it",
                "set default-time-zone='+00:00' or the Laravel connection's 'timezone'",
            )
        )
    if drop is not None:
        checks.append(
            Check(
                "truncate privilege",
                Outcome.WARN,
                "this database user may DROP (and so TRUNCATE) personal_access_tokens: "
                "TRUNCATE fires no trigger on MySQL, so truncated tokens stay valid in regions",
                "give the application's user no DROP privilege; use DELETE",
            )
            if drop
            else Check("truncate privilege", Outcome.PASS, "this database user cannot TRUNCATE")
        )
    return checks


def _mysql_can_drop(conn: sa.Connection) -> bool:
    grants = " ".join(str(row[0]).upper() for row in conn.execute(sa.text("SHOW GRANTS")))
    return "ALL PRIVILEGES" in grants or "DROP" in grants
