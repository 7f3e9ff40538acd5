"""``python -m fake_disco ARGS``: the ``disco`` console script with the fake seams of
:mod:`campaign_fakes` (for the tests that run a campaign in a subprocess and kill or interrupt it)."""

import sys

import campaign_fakes
from discovery.cli import main

if __name__ == "__main__":
    campaign_fakes.install()
    sys.exit(main())
