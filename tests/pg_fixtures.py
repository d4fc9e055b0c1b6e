"""Pytest fixtures for a REAL PostgreSQL server: initdb + pg_ctl in a temp dir on a free port (as the postgres
user when the tests run as root), one fresh database per test, and store factories parametrised over SQLite and
PostgreSQL. Skips cleanly (with the reason) when PostgreSQL or psycopg is not installed.

Use from a test module (tests/ is on sys.path under pytest's default import mode)::

    from pg_fixtures import *  # noqa: F401,F403  (fixtures: pg_server, pg_url, store_target, make_store)
"""
from __future__ import annotations

import itertools

import pytest

__all__ = ["pg_server", "pg_url", "store_target", "make_store"]

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    pytest.importorskip("psycopg", reason="psycopg 3 not installed (pip install 'edgemon[hub]')")
    from edgemon.hub.pgserver import PostgresProcess, PostgresUnavailable

    try:
        # fsync off: tests check semantics, not durability; the bench runs with fsync on.
        srv = PostgresProcess(fsync=False).start()
    except PostgresUnavailable as err:
        pytest.skip(f"PostgreSQL server not available: {err}")
    yield srv
    srv.cleanup()


@pytest.fixture
def pg_url(pg_server) -> str:
    """URL of a fresh, empty database on the session's server."""
    name = f"edgemon_test_{next(_counter)}"
    url = pg_server.create_database(name)
    yield url
    try:
        pg_server.drop_database(name)
    except Exception:  # noqa: BLE001 - a test that left a connection open must not fail the next one
        pass


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path) -> str:
    """A store location for each backend: a SQLite file path, or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make_store(store_target):
    """``make(**kw) -> store`` on ``store_target`` (call again to reopen); all closed at teardown."""
    from edgemon.hub.store import open_store

    made: list = []

    def make(**kw):
        s = open_store(store_target, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
