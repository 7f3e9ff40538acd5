"""Control characters a model or candidate wrote never reach a terminal raw (ANSI escapes and the like)."""

import re

from campaign_fakes import fake_config
from discovery.archive import Archive
from discovery.campaign import run_campaign
from discovery.cli import main
from discovery.proposal import Proposal

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")  # \t and \n are fine
CLEAR, TITLE, C1, BIDI = "\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "\u202e"
EVIL = f"{CLEAR}{TITLE}{C1}{BIDI}"


class Evil:
    name = "evil"

    def __init__(self):
        self.codes = [f"def evil(rho, beta):\n    raise ValueError('{CLEAR}{TITLE}')\n",
                      f"def fine(rho, beta):\n    # {EVIL}\n    return -F.logsigmoid(3 * beta * rho)\n"]

    def propose(self, context):
        code = self.codes[context.n_proposed]
        return Proposal(thought=f"idea {EVIL}", name=f"evil{CLEAR}", code=code, proposer=self.name)


def test_show_status_and_the_campaign_log_escape_control_characters(tmp_path, capfd):
    out = tmp_path / "c"
    run_campaign(out, fake_config(candidates=2, seeds=(0,)), proposer=Evil(), progress=True)
    with Archive.open(out) as a:  # a row written by another tool, name and all
        cid = a.add(kind="candidate", name=f"named{CLEAR}", code=f"def n(rho, beta):\n    return rho  # {EVIL}\n",
                    thought=EVIL)
        a.update(cid, status="done", fitness=0.99, reason=EVIL)
        rows = a.rows(kind="candidate")
    assert rows[0]["status"] == "invalid" and CLEAR in rows[0]["reason"]  # the archive keeps it all
    assert EVIL in rows[1]["thought"] and EVIL in rows[1]["code"]
    logged = capfd.readouterr().err
    assert "invalid" in logged and "\\x1b[2J" in logged
    printed = [logged.replace("\r", ""), (out / "campaign.log").read_text()]  # \r: the bar's own
    for args in (["show", str(out), str(rows[0]["id"])], ["show", str(out), str(rows[1]["id"])],
                 ["show", str(out), str(cid)], ["status", str(out)]):
        assert main(args) == 0
        printed.append(capfd.readouterr().out)
    assert "\\x1b]0;pwned\\x07" in printed[3] and "\\u202e" in printed[3]  # visible, not obeyed
    assert "named" in printed[-1]
    for text in printed:
        assert not RAW.search(text), repr(RAW.search(text))
