import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # campaign_fakes and fake_openai, also for `disco` subprocesses
    sys.path.insert(0, str(HERE))
