"""The test suite's settings: production's, with a key of its own (there is no committed
default). Exported to the environment, so the processes the tests start share it (django-q2
signs tasks with it)."""

import os

os.environ.setdefault("SECRET_KEY", "orderdesk-test-suite-key-not-for-any-deployment-0123456789")
# No machine reaches the internet: a cluster a test starts at 08:30 IST must not try the real
# symbol masters (tests point SHOONYA_MASTER_URL at a local server instead).
os.environ.setdefault("INSTRUMENT_EXCHANGES", "")

from orderdesk.settings import *  # noqa: E402,F403

# WhiteNoise warns on every app start when the collected files' folder is missing (only
# `manage.py up` collects into it).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405
