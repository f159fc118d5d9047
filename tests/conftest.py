from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import Engine

from services.core.db import create_db_engine
from tests.support.stores import DatabaseFactory, backend_under_test, redis_server

# Speed is measured by bench/, never by tests: on a shared two-core machine hypothesis's
# 200 ms deadline per example fails correct code that merely waited for a core.
settings.register_profile("switchboard", deadline=None)
settings.load_profile("switchboard")


def pytest_report_header() -> str:
    return f"switchboard test database: {backend_under_test()}"


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(backend_under_test(), tmp_path_factory.mktemp("db"))
    yield factory
    factory.close()


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> Iterator[str]:
    """A freshly migrated, empty database of the backend under test."""
    url = database_factory.new_database()
    yield url
    database_factory.drop(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"
