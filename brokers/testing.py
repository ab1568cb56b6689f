"""pytest fixtures for the Shoonya adapter against the fake Noren server. Test modules load
them with `pytest_plugins = ["brokers.testing"]`."""

import pytest

from . import registry
from .fake_noren import TEST_ACCOUNT, FakeNoren


@pytest.fixture
def fake_noren():
    with FakeNoren(account=TEST_ACCOUNT) as fake:
        yield fake


def use_shoonya(settings, fake: FakeNoren, oauth: bool):
    settings.ORDERDESK_BROKER = "shoonya"
    settings.SHOONYA_ALGO_ID = ""
    settings.SHOONYA_LOGIN_RETRY_S = 60
    for name, value in fake.settings(oauth=oauth).items():
        setattr(settings, name, value)
    registry._broker.cache_clear()


@pytest.fixture
def shoonya_legacy(settings, fake_noren, db):
    """ORDERDESK_BROKER=shoonya with QuickAuth credentials: the adapter logs in by itself."""
    use_shoonya(settings, fake_noren, oauth=False)
    yield fake_noren
    registry._broker.cache_clear()


@pytest.fixture
def shoonya_oauth(settings, fake_noren, db):
    """ORDERDESK_BROKER=shoonya with OAuth credentials and a session stored as
    `manage.py shoonya_login` would."""
    from . import shoonya_session

    use_shoonya(settings, fake_noren, oauth=True)
    shoonya_session.gen_acs_tok(shoonya_session.new_client(), fake_noren.issue_auth_code())
    yield fake_noren
    registry._broker.cache_clear()
