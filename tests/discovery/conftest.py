import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # campaign_fakes and fake_openai, also for `disco` subprocesses
    sys.path.insert(0, str(HERE))


def pytest_configure(config):
    config.addinivalue_line("markers", "real_seams: the campaign runs with the project's own seams "
                                       "(validator, fingerprinter, inspector, trainer), not the fakes")


@pytest.fixture(autouse=True)
def fake_seams(request, monkeypatch):
    """Campaigns in these tests call the fast fakes of campaign_fakes unless marked ``real_seams``."""
    if request.node.get_closest_marker("real_seams") is None:
        import campaign_fakes
        campaign_fakes.install(monkeypatch)
