"""evaluation.report: one self-contained page, and every image in it decodes in headless Chromium."""

import html
import json
import re
import shutil
import subprocess

import pytest

from discovery.cli import main
from evaluation.frontier import sweep
from evaluation.heldout import evaluate_heldout
from evaluation.report import write_report
from tests.evaluation.fakes import FakeRunner, make_campaign

INSTALL_HINT = ("headless Chromium is needed for the report rendering test and was not found: install it with "
                "`apt-get update && apt-get install -y chromium` (Debian/Ubuntu; CI installs it)")


def tiny_png(path, label):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.plot([0, 1, 2], [1, 0.5, 0.2])
    ax.set_title(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A finished campaign with plots for one candidate, a held-out evaluation and a beta sweep."""
    d = make_campaign(tmp_path_factory.mktemp("report") / "c")
    folder = d / "candidates" / "0004-good" / "inspection"
    tiny_png(folder / "good_inspect.png", "good: loss and gradient")
    (folder / "good_summary.json").write_text(json.dumps({
        "name": "good", "closed_form": {"method": "symbolic (AST -> sympy)", "expression": "log(1 + exp(-z))"},
        "fprime0": {"value": -0.5}, "limits": {"rho->+inf": {"value": 0}}, "convexity": {"convex": True}}))
    evaluate_heldout(d, top=2, seeds=[1, 2, 3], runner=FakeRunner(), n_boot=300, log=lambda m: None)
    sweep({"dpo": "dpo", "good": "def good(rho, beta): ..."}, betas=[0.05, 0.1, 0.5], seeds=[0, 1], out_dir=d,
          runner=FakeRunner())
    return d


def test_report_is_one_self_contained_page(campaign):
    path = write_report(campaign)
    page = path.read_text()
    assert path == campaign / "report.html"
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 3  # fitness over the campaign, the frontier, good's inspection plot
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="(https?:)?//', page) and "<link" not in page and "@import" not in page
    for heading in ("Leaderboard", "Fitness over the campaign", "Held-out comparison", "Reward versus KL", "Objectives"):
        assert heading in page
    assert "log(1 + exp(-z))" in page                   # good's symbolic form
    assert "No symbolic summary in candidates/0005-meh" in page
    assert "non-finite loss" in page                    # boom's failure, shown with its reason
    assert "good#4" in page and "[+0.1000,&nbsp;+0.1000]" in page  # held-out interval of good vs dpo
    assert "− 0.5 (SFT)" in page                          # the win rate against the SFT model too
    assert "Does the search ranking transfer?" in page     # per held-out setting: the two rankings, rho, tau
    assert "<th>search rank</th>" in page and "<th>held-out rank</th>" in page
    assert "Spearman rho over 5 objectives: +1.00 [95% bootstrap CI over seeds: +1.00, +1.00]" in page
    assert "Kendall tau over 5 objectives: +1.00" in page
    assert re.search(r"Beat DPO here <span[^>]*>\(Holm-adjusted[^<]*\)</span>: <b>good#4</b>", page)


def test_report_says_what_is_missing(tmp_path):
    d = make_campaign(tmp_path / "bare")
    page = write_report(d).read_text()
    assert "No held-out evaluation in this directory" in page and "disco heldout" in page
    assert "No beta sweep in this directory" in page
    assert "No plots in candidates/0004-good" in page


def test_disco_report_command(campaign, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(campaign), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 10_000


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail(INSTALL_HINT)  # never a skip: CI must render the page


def test_every_image_decodes_in_headless_chromium(campaign, tmp_path):
    page = write_report(campaign, out=tmp_path / "report.html")
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
           "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-images-decoded="(\d+)"', done.stdout)
    assert m, f"the page's load script did not run; chromium said: {done.stderr[-1500:]}"
    assert int(m.group(1)) == 3 and m.group(2) == m.group(1), f"{m.group(2)} of {m.group(1)} images decoded"


def test_sweep_has_one_point_per_objective_and_beta_and_leaves_failures_out(tmp_path, capsys, monkeypatch):
    from evaluation import analysis_commands

    monkeypatch.setattr(analysis_commands, "RUNNER", FakeRunner(fail_seeds={1}))
    assert main(["sweep", "--objectives", "dpo", "ipo", "--betas", "0.05", "0.5", "--seeds", "0", "1",
                 "--out", str(tmp_path)]) == 0
    assert "dpo" in capsys.readouterr().out
    saved = json.loads((tmp_path / "sweep.json").read_text())
    pts = {(p["objective"], p["beta"]): p for p in saved["points"]}
    assert sorted(pts) == [("dpo", 0.05), ("dpo", 0.5), ("ipo", 0.05), ("ipo", 0.5)]
    # seed 1 failed everywhere: each point is seed 0 alone (fake kl = 2 / beta for dpo), and says so
    assert pts[("dpo", 0.5)]["kl"] == pytest.approx(4.0) and pts[("dpo", 0.5)]["n_failed"] == 1
    assert pts[("dpo", 0.5)]["failures"][0]["reason"].startswith("non-finite loss")
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_control_characters_in_the_archive_are_shown_as_escapes(tmp_path):
    from discovery.archive import Archive
    d = make_campaign(tmp_path / "c")
    evil = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202e\x00\x7f"
    with Archive.open(d) as a:
        cid = a.add(kind="candidate", name="evil", code=f"def e(rho, beta):\n    return rho  # {evil}\n",
                    thought=f"idea {evil}")
        a.update(cid, status="failed", reason=f"raised ValueError: {evil}")
    page = write_report(d).read_text()
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", page)
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202e\\x00\\x7f" in page  # visible in the page


# -- layout at a 1400 px window: measured by a test-only script injected into a copy of the page ----

MEASURE = """<script>window.addEventListener("load",function(){
var bad=[],tables=document.querySelectorAll("table");
tables.forEach(function(t,i){
  var c=t.parentElement,s=getComputedStyle(c);
  var room=c.clientWidth-parseFloat(s.paddingLeft)-parseFloat(s.paddingRight);
  var w=t.getBoundingClientRect().width;
  if(w>room+0.5)bad.push("table"+i+":"+Math.round(w)+">"+Math.round(room));
  t.querySelectorAll("td,th").forEach(function(x){if(x.scrollWidth>x.clientWidth+1)
    bad.push("cell in table"+i+":"+x.textContent.slice(0,30));});});
var heads=Array.prototype.map.call(document.querySelectorAll("#leaderboard th"),function(h){return h.textContent;});
document.body.setAttribute("data-tables",String(tables.length));
document.body.setAttribute("data-too-wide",bad.join(" | "));
document.body.setAttribute("data-page-scrolls",String(document.documentElement.scrollWidth>window.innerWidth));
document.body.setAttribute("data-leaderboard-heads",heads.join(";"));});</script>"""


def render(page, tmp_path, *flags) -> tuple[str, str]:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
           *flags, "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return done.stdout, done.stderr


def test_every_table_fits_a_1400px_window_and_the_leaderboard_has_kl_and_reward(campaign, tmp_path):
    page = write_report(campaign, out=tmp_path / "report.html")
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom, err = render(measured, tmp_path, "--window-size=1400,1000")
    body = re.search(r"<body[^>]*>", dom)
    assert body and "data-tables" in body.group(0), f"the measuring script did not run: {err[-1500:]}"
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', body.group(0)))
    assert int(attrs["data-tables"]) >= 4
    assert attrs["data-too-wide"] == "", attrs["data-too-wide"]
    assert attrs["data-page-scrolls"] == "false"
    heads = html.unescape(attrs["data-leaderboard-heads"]).split(";")
    assert {"id", "fitness", "seeds", "reward", "kl"} <= {h.split(" ")[0] for h in heads}, heads


def test_the_fitness_interval_says_what_it_is_and_kl_and_reward_are_seed_means(tmp_path):
    from discovery.archive import Archive
    from evaluation.campaign import read_campaign
    from evaluation.report import build_html
    from tests.evaluation.fakes import KL, config_with

    one = write_report(make_campaign(tmp_path / "one")).read_text()
    assert "one seed: no seed-level ±; in parentheses that seed&#x27;s within-seed eval se (win_rate_se" in one
    lb_one = one[one.index('id="leaderboard"'):]
    lb_one = lb_one[:lb_one.index("</table>")]
    assert "&nbsp;±&nbsp;" not in lb_one and "± se" not in lb_one  # a one-seed campaign has no seed-level ±
    assert "(eval&nbsp;se&nbsp;0.0200)" in lb_one
    assert "noise floor: unknown (one seed: run `disco calibrate`)" in one
    three = make_campaign(tmp_path / "three", config_with({"training.seeds": [0, 1, 2]}))
    page = build_html(read_campaign(three))
    assert "mean ± se over 3 seeds" in page and "within-seed" not in page
    with Archive.open(three) as a:
        good = next(r for r in a.rows() if r["name"] == "good")
    assert good["metrics"]["mean"]["kl"] == pytest.approx(KL["good"])  # summarise's shape, as a campaign stores it
    lb = page[page.index('id="leaderboard"'):]
    lb = lb[:lb.index("</table>")]
    good_row = next(tr for tr in lb.split("<tr") if ">good<" in tr)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", good_row)
    assert cells[1] == str(good["id"]) and cells[3].startswith("0.7100&nbsp;±&nbsp;") and cells[4] == "3"
    assert cells[5].startswith("+0.1100 [+0.1100,&nbsp;+0.1100]")  # paired to DPO: the same offsets per seed
    assert cells[6:] == [f"{good['metrics']['mean']['reward']:.4f}", f"{KL['good']:.4f}"]  # reward, kl
    card = page[page.index(f"#{good['id']} good"):]
    assert f"kl {KL['good']:.4f}" in card[:card.index("</div>")] and "reward 0.9100" in card


def test_the_fitness_plot_is_by_archive_id_with_error_bars(tmp_path):
    from matplotlib.container import ErrorbarContainer

    from evaluation.campaign import read_campaign
    from evaluation.report import fitness_figure
    from tests.evaluation.fakes import config_with

    c = read_campaign(make_campaign(tmp_path / "c", config_with({"training.seeds": [0, 1, 2]})))
    ids = {r["name"]: r["id"] for r in c.rows}
    fig = fitness_figure(c)
    ax = fig.axes[0]
    bars = [x for x in ax.containers if isinstance(x, ErrorbarContainer)]
    assert len(bars) == 1
    line, _, (ycol,) = bars[0]
    assert list(line.get_xdata()) == [ids["good"], ids["meh"]]  # the ids disco status prints, not 1, 2
    assert len(ycol.get_segments()) == 2 and all(seg[1][1] > seg[0][1] for seg in ycol.get_segments())
    fails = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert list(fails[0].get_xdata()) == [ids["boom"]]
    assert "id" in ax.get_xlabel()


def test_the_proposer_is_named_as_it_ran(tmp_path):
    from tests.evaluation.fakes import config_with

    offline = write_report(make_campaign(tmp_path / "evolve", config_with({"proposer.name": "evolve",
                                                                           "proposer.model": "gpt-4o-mini"}))).read_text()
    assert "offline (evolve)" in offline and "gpt-4o-mini" not in offline
    online = write_report(make_campaign(tmp_path / "openai", config_with({
        "proposer.name": "openai", "proposer.model": "qwen2.5-7b",
        "proposer.base_url": "http://localhost:8000/v1"}))).read_text()
    assert "qwen2.5-7b (OpenAI-compatible endpoint http://localhost:8000/v1)" in online


def test_the_report_defines_its_metrics_from_the_glossary(campaign):
    from inner_loop.glossary import GLOSSARY, TRL_NOTE

    page = write_report(campaign).read_text()
    assert f'title="{html.escape(GLOSSARY["kl"])}' in page          # the kl column's tooltip
    assert "<h2 id='glossary'>Metrics</h2>" in page
    for key, text in GLOSSARY.items():
        assert f"<dt>{key}</dt><dd>{html.escape(text)}</dd>" in page
    assert f"<dt>trl/</dt><dd>{html.escape(TRL_NOTE)}</dd>" in page
    assert "rewards/chosen" not in page.replace(html.escape(TRL_NOTE), "")  # no TRL key outside trl/


def test_the_leaderboard_pairs_each_row_with_dpo_by_hand(tmp_path):
    """Per-seed win rates chosen here; the interval is the t-interval over the seeds' differences."""
    import math
    import statistics

    from discovery.archive import Archive
    from discovery.training import summarise
    from evaluation.campaign import read_campaign
    from evaluation.report import build_html
    from tests.evaluation.fakes import config_with

    wins = {"dpo": [0.60, 0.64, 0.58], "ipo": [0.59, 0.61, 0.60], "good": [0.66, 0.67, 0.63],
            "meh": [0.61, 0.62, 0.61]}
    with Archive.create(tmp_path / "c", config_with({"training.seeds": [0, 1, 2]})) as a:
        for name, values in wins.items():
            cid = a.add(kind="baseline" if name in ("dpo", "ipo") else "candidate", name=name, code=name)
            results = [{"seed": s, "status": "done", "metrics": {"win_rate": v, "win_rate_se": 0.02}}
                       for s, v in enumerate(values)]
            a.update(cid, status="done", fitness=statistics.fmean(values),
                     fitness_se=statistics.stdev(values) / math.sqrt(3), metrics=summarise(results))
    page = build_html(read_campaign(tmp_path / "c"))
    d = [g - r for g, r in zip(wins["good"], wins["dpo"])]       # +0.06, +0.03, +0.05
    half = 4.302652729911275 * statistics.stdev(d) / math.sqrt(3)  # t(0.975, 2)
    mean = statistics.fmean(d)
    lb = page[page.index('id="leaderboard"'):]
    lb = lb[:lb.index("</table>")]
    good = next(tr for tr in lb.split("<tr") if ">good<" in tr)
    assert f"{mean:+.4f} [{mean - half:+.4f},&nbsp;{mean + half:+.4f}]" in good
    assert "title='95% CI over 3 seeds (t, paired by seed)'" in good and "≈" not in good
    meh = next(tr for tr in lb.split("<tr") if ">meh<" in tr)
    assert "≈" in meh  # +0.0067 with an interval that contains 0: inside the noise floor
    # no calibration: the floor is estimated from DPO - IPO per seed, and says so
    sd = statistics.stdev([x - y for x, y in zip(wins["dpo"], wins["ipo"])])
    assert f"smallest detectable difference {2.8015852181 * sd / math.sqrt(3):.4f}" in page
    assert "estimated from this campaign&#x27;s baselines: DPO - IPO per seed over 3 seeds" in page
    assert "Fitness: mean_metric of win_rate over seeds." in page
