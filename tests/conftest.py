"""Session-scoped real servers and per-test isolation (topic prefix, Redis DB, schema).

Servers come from the environment, Docker, or local binaries (see
``tests/servers.py``). With ``CI=true`` a server that cannot be had fails the
run; elsewhere the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from producer.store import TokenStore
from shared.keys import Topics
from tests.cluster_helpers import ThreeBrokers, start_three_brokers
from tests.harness import Pipeline, pipeline_context
from tests.servers import TEST_ENV, DedicatedKafka, Servers, session_servers

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(kind: str, error: BaseException) -> None:
    message = f"no {kind} server could be had: {type(error).__name__}: {error}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing server fails the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """The session's server provider; every server it starts is stopped at the end."""
    root = Path(tempfile.mkdtemp(prefix="tokensync-test-"))
    root.chmod(0o755)  # a local PostgreSQL runs as the 'postgres' user and must reach it
    with session_servers(root) as provider:
        yield provider
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(servers: Servers) -> str:
    """``host:port`` of a real Kafka 4.x broker."""
    try:
        return servers.kafka()
    except Exception as e:
        _unavailable("Kafka", e)
        raise


@pytest.fixture(scope="session")
def redis_server(servers: Servers) -> tuple[str, int]:
    """``(host, port)`` of a real Redis server shared by the session."""
    try:
        return servers.redis()
    except Exception as e:
        _unavailable("Redis", e)
        raise


@pytest.fixture(scope="session")
def postgres_base_url(servers: Servers) -> str:
    """SQLAlchemy URL of a real PostgreSQL database."""
    try:
        return servers.postgres()
    except Exception as e:
        _unavailable("PostgreSQL", e)
        raise


@pytest.fixture(scope="session")
def mysql_base_url(servers: Servers) -> str:
    """SQLAlchemy URL of a real MariaDB (or MySQL 8) server."""
    try:
        return servers.mysql()
    except Exception as e:
        _unavailable("MariaDB/MySQL", e)
        raise


_next_db = iter(range(1, 1_000_000))


def _fresh_redis_db(host: str, port: int) -> str:
    client = redis.Redis(host=host, port=port)
    try:
        databases = int(client.config_get("databases").get("databases", 16))
    finally:
        client.close()
    db = next(_next_db) % databases
    url = f"redis://{host}:{port}/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture
def redis_url(redis_server: tuple[str, int]) -> str:
    """A Redis database of this test's own, empty at the start."""
    return _fresh_redis_db(*redis_server)


@pytest.fixture
def region_urls(redis_server: tuple[str, int]) -> dict[str, str]:
    """Three regions' Redis databases (eu, us, ap), each empty, for this test."""
    return {name: _fresh_redis_db(*redis_server) for name in ("eu", "us", "ap")}


@pytest.fixture
def topics() -> Topics:
    """Topic names under a prefix no other test uses."""
    return Topics(prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_base_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_base_url else "?"
    yield f"{postgres_base_url}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def mysql_url(mysql_base_url: str) -> Iterator[str]:
    """A MariaDB/MySQL URL of a fresh database, dropped after the test."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(mysql_base_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    yield sa.make_url(mysql_base_url).set(database=name).render_as_string(hide_password=False)
    with engine.begin() as conn:
        # A connection a test left open in a transaction holds a metadata lock that
        # DROP DATABASE would wait for without end: end those sessions first.
        leftover = conn.execute(
            sa.text(
                "SELECT ID FROM information_schema.PROCESSLIST"
                " WHERE DB = :d AND ID <> CONNECTION_ID()"
            ),
            {"d": name},
        ).scalars()
        for session in list(leftover):
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.execute(sa.text(f"KILL {int(session)}"))
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test's own."""
    return f"sqlite:///{tmp_path / 'store.db'}"


_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mysql_url"}


@pytest.fixture(params=list(_URL_FIXTURES))
def database_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite, on PostgreSQL and on MariaDB (or MySQL)."""
    url: str = request.getfixturevalue(_URL_FIXTURES[request.param])
    return url


@contextlib.contextmanager
def migrated_store(url: str) -> Iterator[TokenStore]:
    """A token store on ``url`` with every migration applied; its pool closed after."""
    from producer.schema import create_engine, migrate

    engine = create_engine(url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(database_url: str) -> Iterator[TokenStore]:
    """A migrated token store on this test's database (SQLite, PostgreSQL, MariaDB)."""
    with migrated_store(database_url) as store:
        yield store


@pytest.fixture
def client(store: TokenStore) -> Iterator[httpx.Client]:
    """The token store's HTTP API, served for real (uvicorn) on this test's ``store``."""
    from producer.api import create_app
    from shared.settings import Settings
    from tests.http_helpers import serving

    with serving(create_app(Settings(), store)) as url, httpx.Client(base_url=url) as http:
        yield http


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[TokenStore]:
    """A migrated token store on PostgreSQL only (for what only PostgreSQL has)."""
    with migrated_store(postgres_url) as store:
        yield store


@pytest.fixture
def maria_store(mysql_url: str) -> Iterator[TokenStore]:
    """A migrated token store on MariaDB (or MySQL) only."""
    with migrated_store(mysql_url) as store:
        yield store


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say where the servers come from, so a reader of CI logs knows."""
    sources = ", ".join(
        f"{kind}={TEST_ENV[var]}"
        for kind, var in (
            ("kafka", "TOKENSYNC_TEST_KAFKA"),
            ("redis", "TOKENSYNC_TEST_REDIS"),
            ("postgres", "TOKENSYNC_TEST_POSTGRES"),
            ("mysql", "TOKENSYNC_TEST_MYSQL"),
        )
        if TEST_ENV.get(var)
    )
    return [
        f"tokensync servers: {sources or 'docker if an engine answers, else local binaries'}"
        f"; CI={IN_CI}"
    ]


@pytest.fixture
def dedicated_kafka(tmp_path: Path) -> Iterator[DedicatedKafka]:
    """A broker this test may stop and restart (local jars; fails in CI if they are missing)."""
    broker = DedicatedKafka(tmp_path)
    try:
        broker.start()
    except Exception as e:
        _unavailable("dedicated Kafka", e)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def three_brokers_session(servers: Servers) -> Iterator[ThreeBrokers]:
    """ONE three-node KRaft cluster (local jars, RF 3 internals, 256 MiB heaps) for every
    three-broker test of the session; use ``three_brokers``, which heals it per test."""
    from stack.kafka import KafkaJars, default_cache_dir

    jars = KafkaJars(default_cache_dir())
    if not jars.present:
        _unavailable("three-broker Kafka", FileNotFoundError(f"no Kafka jars in {jars.libs}"))
    try:
        brokers = start_three_brokers(jars, servers.root / "cluster")
    except Exception as e:
        _unavailable("three-broker Kafka", e)
        raise
    try:
        yield brokers
    finally:
        brokers.close()


@pytest.fixture
def three_brokers(three_brokers_session: ThreeBrokers) -> Iterator[ThreeBrokers]:
    """The session's three-broker cluster, whole at the start of the test (a node an
    earlier test killed or paused is back and every ISR is complete); the test may kill,
    pause or restart nodes by id."""
    three_brokers_session.heal()
    yield three_brokers_session
    for node_id in list(three_brokers_session.paused):
        three_brokers_session.resume(node_id)


@pytest.fixture
def pipeline(
    tmp_path: Path,
    kafka_bootstrap: str,
    sqlite_url: str,
    topics: Topics,
    region_urls: dict[str, str],
) -> Iterator[Pipeline]:
    """Store (SQLite), relay thread and three regions' settings; workers start on demand."""
    yield from pipeline_context(
        Pipeline(tmp_path, kafka_bootstrap, sqlite_url, topics, region_urls)
    )


@pytest.fixture
def one_region(
    tmp_path: Path, kafka_bootstrap: str, sqlite_url: str, topics: Topics, redis_url: str
) -> Iterator[Pipeline]:
    """The ``pipeline`` with a single region, ``eu``, on this test's Redis database."""
    yield from pipeline_context(
        Pipeline(tmp_path, kafka_bootstrap, sqlite_url, topics, {"eu": redis_url})
    )


@pytest.fixture
def any_pipeline(
    tmp_path: Path,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    region_urls: dict[str, str],
) -> Iterator[Pipeline]:
    """The ``pipeline`` on each store in turn: SQLite, PostgreSQL and MariaDB."""
    yield from pipeline_context(
        Pipeline(tmp_path, kafka_bootstrap, database_url, topics, region_urls)
    )


@pytest.fixture
def own_redis_url(servers: Servers) -> str:
    """A Redis server of this test's own (it may FLUSHALL or restart it)."""
    try:
        host, port = servers.redis(f"redis-{uuid.uuid4().hex[:8]}")
    except Exception as e:
        _unavailable("Redis", e)
        raise
    return f"redis://{host}:{port}/0"


def pytest_configure(config: pytest.Config) -> None:
    """Log like a process would (JSON lines), at info, so failures show the story; keep
    the suite's own ``TOKENSYNC_TEST_*`` variables away from the code under test."""
    from shared.logs import configure_logging

    for name in TEST_ENV:
        os.environ.pop(name, None)

    configure_logging("info", "json")
