"""``disco report DIR``: one self-contained HTML page about a campaign.

The page has no external resources: every image is a base64 ``data:`` URI, the style sheet is
inline, and one inline script only marks ``<body data-images=N data-images-decoded=M>`` after load
(the rendering test reads it from headless Chromium). Sections, each saying so when its input is
missing:

1. the campaign's resolved config and status counts;
   with the fitness it used (function, metric, matched-KL budget) and its noise floor with the source
   (archive meta ``"noise"``, :mod:`discovery.noise`);
2. the leaderboard (candidates and baselines by fitness, with the fitness's ± and what it is (a
   one-seed row has no seed-level ±), the number of seeds, the paired difference to DPO with its
   interval and what that is, marked ≈ inside the noise floor, and reward and KL averaged over
   seeds) and the rows that failed, with reasons;
3. fitness over the campaign (a plot drawn here from the archive, by archive row id as ``disco
   status`` prints it, with ±1 se bars);
4. held-out comparison (``DIR/heldout.json``) and any ``disco compare`` result (``DIR/comparison.json``);
5. the reward/KL frontier of a beta sweep (``DIR/frontier.png``, or drawn from ``DIR/sweep.json``);
6. every candidate: hypothesis, code, symbolic summary and plots from its folder;
7. the metrics glossary (:mod:`inner_loop.glossary`, also the column headers' tooltips).

Tables fit the page: long text in cells wraps (``overflow-wrap:anywhere``; headers only between words),
numbers break only at spaces,
and each table sits in an ``overflow-x:auto`` box as a last resort for narrow windows.

Everything is read through :mod:`evaluation.campaign` and the JSON files the other commands write.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from pathlib import Path
from typing import Callable

from discovery import noise
from discovery.text import shown
from evaluation.campaign import CampaignResults, metric_means, read_campaign, seeds_done
from evaluation.frontier import FRONTIER_PNG, SWEEP_JSON
from evaluation.heldout import HELDOUT_JSON
from inner_loop.glossary import GLOSSARY, TRL_NOTE, define

COMPARISON_JSON = "comparison.json"
REPORT_HTML = "report.html"
METRIC_COLUMNS = ("win_rate", "reward", "kl")  # means over seeds; the fitness metric itself is not repeated
MAX_IMAGES_PER_CANDIDATE = 6

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;max-width:1100px;
margin:0 auto;padding:24px 28px 64px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;padding-bottom:4px;border-bottom:2px solid #e3e7ec}
h3{font-size:16px;margin:22px 0 6px}.muted{color:#66707a}.small{font-size:13px}
.tablebox{max-width:100%;overflow-x:auto;margin:8px 0 12px}
table{border-collapse:collapse;font-size:14px;max-width:100%}
th,td{border:1px solid #d9dee3;padding:4px 9px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f3f5f7;font-weight:600;overflow-wrap:normal}th[title]{cursor:help;text-decoration:underline dotted #9aa4ae}
td.num{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:right;overflow-wrap:normal}
dl.glossary dt{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;margin-top:6px}
dl.glossary dd{margin:0 0 0 18px}
tr.baseline td{background:#f7f9fc;color:#3c4650}
.better{background:#e3f4e6!important}.worse{background:#fbe6e6!important}
.badge{display:inline-block;font-size:11px;padding:1px 6px;border-radius:8px;background:#e3e7ec;margin-left:4px}
.fail{color:#a12a2a}.note{background:#fff8e1;border-left:4px solid #f0c040;padding:6px 10px;margin:8px 0}
pre{background:#f6f8fa;border:1px solid #e3e7ec;padding:8px 10px;overflow-x:auto;font-size:12.5px;line-height:1.35}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
img{max-width:100%;height:auto;border:1px solid #e3e7ec;margin:4px 0}
figure{margin:8px 0}figcaption{font-size:12px;color:#66707a}
.card{border:1px solid #e3e7ec;border-radius:6px;padding:4px 16px 10px;margin:14px 0}
.card img{max-width:760px}
"""

MARK_IMAGES = """window.addEventListener("load",function(){var i=Array.prototype.slice.call(document.images);
document.body.setAttribute("data-images",String(i.length));document.body.setAttribute("data-images-decoded",
String(i.filter(function(x){return x.complete&&x.naturalWidth>0;}).length));});"""


def esc(x) -> str:
    """HTML-escaped, with control characters (ANSI escapes, bidi overrides) shown as ``\\x1b``:
    the archive holds text a model and its candidates wrote."""
    return html.escape(shown("" if x is None else str(x)))


def num(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def img_tag(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def boxed(inner: str, **attrs) -> str:
    """A table in a box that scrolls sideways only if the page is narrower than the table can wrap to."""
    extra = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
    return f"<div class='tablebox'><table{extra}>{inner}</table></div>"


def th(key: str, label: str | None = None, note: str = "") -> str:
    """A column header whose tooltip is the glossary's definition of ``key``."""
    title = " ".join(x for x in (define(key), note) if x)
    return f'<th title="{esc(title)}">{esc(label or key)}</th>' if title else f"<th>{esc(label or key)}</th>"


def pm(mean, se, digits: int = 4) -> str:
    """``mean ± se``, kept on one line (a table may still wrap between cells' words elsewhere)."""
    return num(mean, digits) + (f"&nbsp;±&nbsp;{num(se, digits)}" if isinstance(se, (int, float)) and math.isfinite(se) else "")


def interval_words(c: CampaignResults, row: dict) -> str:
    """What the ± after ``row``'s fitness is (discovery.seams.mean_metric's definition)."""
    function = c.config.fitness.function
    if function != "mean_metric":
        return f"± the standard error that the fitness function {function!r} reported"
    n = seeds_done(row)
    if n is None:
        return "± standard error (number of seeds not recorded)"
    if n > 1:
        return f"mean ± se over {n} seeds"
    return (f"one seed: no seed-level ±; in parentheses that seed's within-seed eval se ({c.metric}_se, over "
            "held-out prompts; training noise not included)")


def fitness_cell(c: CampaignResults, row: dict) -> str:
    """The fitness with its ± when that is a se over seeds; a one-seed row's within-seed eval se is
    shown in parentheses, never as ±."""
    se = row.get("fitness_se")
    if c.config.fitness.function == "mean_metric" and (seeds_done(row) or 0) <= 1 \
            and isinstance(se, (int, float)) and math.isfinite(se):
        return f"{num(row.get('fitness'))} <span class='muted small'>(eval&nbsp;se&nbsp;{num(se)})</span>"
    return pm(row.get("fitness"), se)


def campaign_noise(c: CampaignResults) -> dict:
    """The campaign's noise record: archive meta ``"noise"`` as the campaign stored it, else
    estimated from the baselines here (:func:`discovery.noise.from_baselines`)."""
    record = getattr(c, "noise", None)
    if record is None:
        from discovery.archive import DB_NAME, Archive
        if (Path(c.dir) / DB_NAME).is_file():
            with Archive.open(c.dir) as archive:
                record = archive.meta("noise")
    record = record or noise.from_baselines(c.rows, c.metric)
    try:
        c.noise = record  # read once per page
    except AttributeError:
        pass
    return record


def paired_dpo(c: CampaignResults, row: dict, record: dict) -> dict | None:
    """``row``'s paired difference to DPO (None for DPO itself or without DPO)."""
    ref = noise.reference_row(c.rows)
    if ref is None or ref.get("id") == row.get("id"):
        return None
    return noise.paired_to(row, ref, c.metric, record)


def paired_cell(p: dict | None, row: dict) -> str:
    if row.get("kind") == "baseline" and row.get("name") == noise.REFERENCE:
        return "<td class='num muted'>reference</td>"
    if p is None:
        return "<td class='num muted'>—</td>"
    cls = ""
    if p.get("within_noise") is False and p.get("lo") is not None:
        cls = "better" if p["diff"] > 0 else "worse"
    mark = {True: " ≈", None: " ?", False: ""}[p.get("within_noise")]
    text = esc(noise.interval_text(p)).replace(", ", ",&nbsp;")
    return f"<td class='num {cls}' title='{esc(p['what'])}'>{text}{mark}</td>"


def stage_badges(row: dict) -> str:
    from discovery.campaign import tags
    return "".join(f"<span class=badge>{esc(t)}</span>" for t in tags(row))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- sections ------------------------------------------------------------------------------------

def setting(config: dict, key: str):
    """``config``'s value at the dotted ``key`` (``training.seeds``)."""
    for part in key.split("."):
        config = config[part]
    return config


def config_section(c: CampaignResults) -> str:
    config = c.config.to_dict()
    keys = ("training.task", "training.seeds", "training.beta", "fitness.metric", "fitness.function",
            "fitness.kl_budget", "fitness.calibration", "training.screen_seeds", "training.best_extra_seeds",
            "candidates", "training.overrides", "training.isolation")
    # the proposer as a reader needs it: "model" is a field of every config, used only by "openai"
    rows = f"<tr><th>proposer</th><td>{esc(c.proposer)}</td></tr>" + "".join(
        f"<tr><th>{esc(k)}</th><td><code>{esc(json.dumps(setting(config, k)))}</code></td></tr>" for k in keys)
    counts: dict[str, int] = {}
    for r in c.candidates():
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no candidates yet"
    return (f"<h2>Campaign</h2><p>{len(c.candidates())} candidates: {esc(status)}; "
            f"{len(c.baselines())} baselines.</p><p id='fitness-used'>Fitness: {esc(c.config.fitness.describe())}.</p>"
            f"<p id='noise-floor'>{esc(noise.floor_line(campaign_noise(c)))}.</p>" + boxed(rows))


def metric_columns(c: CampaignResults) -> list[str]:
    """The per-seed metrics the leaderboard averages (the fitness metric is the fitness column)."""
    return [m for m in METRIC_COLUMNS if m != c.metric and any(
        isinstance(metric_means(r).get(m), (int, float)) for r in c.rows)]


def leaderboard_section(c: CampaignResults) -> str:
    metric = c.metric
    cols = metric_columns(c)
    record = campaign_noise(c)
    head = "".join(th(m, note="(mean over the row's finished seeds)") for m in cols)
    body, kinds, whats = [], set(), []
    for rank, r in enumerate(c.leaderboard(), 1):
        m = metric_means(r)
        base = r.get("kind") == "baseline"
        n = seeds_done(r)
        kinds.add("many" if (n or 0) > 1 else "one" if n == 1 else "?")
        p = paired_dpo(c, r, record)
        if p is not None and p["what"] not in whats:
            whats.append(p["what"])
        cells = "".join(f'<td class="num">{num(m.get(k))}</td>' for k in cols)
        body.append(f'<tr class="{"baseline" if base else ""}"><td class="num">{rank}</td><td class="num">{r["id"]}</td>'
                    f'<td>{esc(r["name"])}{"<span class=badge>baseline</span>" if base else ""}{stage_badges(r)}</td>'
                    f'<td class="num" title="{esc(interval_words(c, r))}">{fitness_cell(c, r)}</td>'
                    f'<td class="num">{n if n is not None else "—"}</td>{paired_cell(p, r)}{cells}</tr>')
    what = []
    if "many" in kinds:
        what.append("with several seeds, fitness is the mean over seeds ± its standard error across seeds")
    if "one" in kinds:
        what.append(f"a one-seed row has no seed-level ±: in parentheses is that seed's within-seed evaluation se "
                    f"({esc(metric)}_se, over held-out prompts), which says nothing about seed-to-seed variation")
    out = [f"<h2>Leaderboard</h2><p class='muted small'>Fitness = {esc(c.config.fitness.describe())} on the search "
           "settings (in-sample: the best of many is flattered; see the held-out comparison); "
           + "; ".join(what or ["± is the fitness function's standard error"])
           + ". <i>seeds</i>: finished training seeds; the other columns are means over them. "
           "<i>− DPO</i>: the paired difference to DPO on the seeds both finished, with its interval ("
           + esc("; ".join(whats) or "none yet") + "); ≈ inside the noise floor (the interval contains 0 or the "
           "difference is below the smallest detectable), ? cannot tell; green/red: outside it. "
           f"{esc(noise.floor_line(record))}. "
           "<i>id</i> is the archive row id, as <code>disco status</code> and <code>disco show</code> use it.</p>"]
    if body:
        out.append(boxed(f"<tr><th>#</th><th title='archive row id (disco status, disco show)'>id</th><th>objective</th>"
                         f"{th('fitness', 'fitness (± se over seeds)' if 'many' in kinds else 'fitness (one seed: eval se)', 'Hover a value for what its error is here.')}"
                         f"<th title='finished training seeds'>seeds</th>"
                         f"<th title='paired difference to DPO on shared seeds; hover a value for its interval'>− DPO "
                         f"<span class='muted small'>[interval]</span></th>{head}</tr>{''.join(body)}", id="leaderboard"))
    else:
        out.append("<p class='note'>No finished rows yet.</p>")
    failed = [r for r in c.rows if r.get("status") not in ("done",)]
    if failed:
        out.append("<h3>Not on the leaderboard</h3>")
        out.append(boxed("<tr><th>id</th><th>objective</th><th>status</th><th>reason</th></tr>" + "".join(
            f"<tr><td class='num'>{r['id']}</td><td>{esc(r['name'])}</td><td class='fail'>{esc(r.get('status'))}</td>"
            f"<td>{esc((r.get('reason') or '')[:400])}</td></tr>" for r in failed)))
    return "".join(out)


def fitness_series(c: CampaignResults) -> dict:
    """The plot's data: finished candidates as (archive id, fitness, se or None), failed ids, baselines."""
    done, failed = [], []
    for r in c.candidates():
        f = r.get("fitness")
        if r.get("status") == "done" and isinstance(f, (int, float)) and math.isfinite(f):
            se = r.get("fitness_se")
            done.append((r["id"], f, se if isinstance(se, (int, float)) and math.isfinite(se) else None))
        else:
            failed.append(r["id"])
    baselines = [(b["name"], b["fitness"], b.get("fitness_se")) for b in c.baselines()
                 if isinstance(b.get("fitness"), (int, float)) and math.isfinite(b["fitness"])]
    return {"done": done, "failed": failed, "baselines": baselines}


def fitness_figure(c: CampaignResults):
    """Fitness of every candidate against its archive row id (±1 se bars), the running best, and the
    baselines as lines; None when there are no candidates."""
    if not c.candidates():
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = fitness_series(c)
    fig, ax = plt.subplots(figsize=(8.0, 3.8), dpi=110)
    ys = [f for _, f, _ in data["done"]]
    if data["done"]:
        xs = [i for i, _, _ in data["done"]]
        es = [se or 0.0 for _, _, se in data["done"]]
        one = any((seeds_done(r) or 0) <= 1 for r in c.candidates() if r.get("status") == "done")
        ax.errorbar(xs, ys, yerr=es, fmt="o", color="C0", ms=5, capsize=2, lw=1,
                    label="candidate (±1 within-seed eval se: one seed)" if one else "candidate (±1 se over seeds)")
        best, run = [], -math.inf
        for y in ys:
            run = max(run, y)
            best.append(run)
        ax.step(xs, best, where="post", color="C0", alpha=0.6, label="best so far")
    for j, (name, f, _) in enumerate(data["baselines"]):
        ax.axhline(f, ls="--", lw=1, color=f"C{j + 1}", label=name)
    if data["failed"]:
        lo = min(ys + [f for _, f, _ in data["baselines"]] or [0])
        ax.plot(data["failed"], [lo] * len(data["failed"]), "x", color="#a12a2a", label="failed / invalid / duplicate")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("candidate id (archive row, as in disco status)")
    ax.set_ylabel(f"fitness ({c.metric})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="best")
    fig.tight_layout()
    return fig


def fitness_plot(c: CampaignResults) -> bytes | None:
    fig = fitness_figure(c)
    if fig is None:
        return None
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def comparison_table(table: dict, *, caption: str = "") -> str:
    """A Table.to_dict(): mean ± se, the interval against the SFT model's 0.5 where the metric has
    one (win rate), and the paired interval to each baseline, coloured when it excludes 0."""
    metric, bases = table["metric"], table["baselines"]
    higher = table.get("higher_is_better")
    with_null = any(r.get("vs_null") for r in table["rows"])
    head = ("<th>− 0.5 (SFT) <span class='muted small'>[95% CI]</span></th>" if with_null else "") + "".join(
        f"<th>− {esc(b)} <span class='muted small'>[95% CI]</span></th>" for b in bases)
    rows, notes, pairings = [], set(), set()

    def interval(e: dict) -> str:
        cls = ""
        if e["excludes_zero"] and higher is not None:
            cls = "better" if (e["mean"] > 0) == higher else "worse"
        pairings.add(f"{e['pairing']}, {e['n_units']} unit(s)" + (f", {e['n_prompts']} prompts" if e.get("n_prompts") else ""))
        if e.get("note"):
            notes.add(e["note"])
        return (f"<td class='num {cls}' title='pairing: {esc(e['pairing'])}'>{e['mean']:+.4f} "
                f"[{e['lo']:+.4f},&nbsp;{e['hi']:+.4f}]</td>")

    for r in table["rows"]:
        runs = f"{r['n_done']}" + (f" <span class='fail'>+{r['n_failed']} failed</span>" if r["n_failed"] else "")
        mean = pm(r["mean"], r.get("se"))
        cells = []
        if with_null:
            cells.append(interval(r["vs_null"]) if r.get("vs_null") else "<td class='num muted'>—</td>")
        for b in bases:
            e = r["vs"].get(b)
            if e is None:
                cells.append("<td class='num muted'>·</td>")
            elif "missing" in e:
                cells.append(f"<td class='muted small'>n/a: {esc(e['missing'])}</td>")
            else:
                cells.append(interval(e))
        base = " class='baseline'" if r["objective"] in bases else ""
        rows.append(f"<tr{base}><td>{esc(r['objective'])}</td><td class='num'>{runs}</td><td class='num'>{mean}</td>{''.join(cells)}</tr>")
    direction = {True: "higher is better", False: "lower is better"}.get(higher, "")
    out = [f"<p class='small muted'>{esc(caption)} Difference = row − baseline on <b>{esc(metric)}</b>"
           f"{' (' + direction + ')' if direction else ''}; 95% paired percentile bootstrap; green/red: the interval "
           "excludes 0. Paired by: " + esc("; ".join(sorted(pairings)) or "—") + ".</p>",
           boxed(f"<tr><th>objective</th><th>runs</th>{th(metric, f'{metric} mean ± se')}{head}</tr>{''.join(rows)}")]
    out.extend(f"<p class='note small'>{esc(n)}</p>" for n in sorted(notes))
    fails = [(r["objective"], f) for r in table["rows"] for f in r.get("failures", [])]
    if fails:
        out.append("<ul class='small'>" + "".join(f"<li class='fail'>{esc(o)} on {esc(f['setting'])}: {esc(f['reason'])}</li>"
                                                  for o, f in fails) + "</ul>")
    return "".join(out)


def heldout_section(d: Path) -> str:
    out = ["<h2>Held-out comparison</h2>"]
    h = _read_json(d / HELDOUT_JSON)
    if h is None:
        out.append(f"<p class='note'>No held-out evaluation in this directory ({esc(HELDOUT_JSON)} missing): "
                   f"run <code>disco heldout {esc(d)} --top 3</code>.</p>")
    else:
        used = h.get("used", {})
        out.append(f"<p>Top {len(h.get('candidates', []))} candidates retrained on {len(h.get('settings', []))} "
                   f"settings the search did not use (search used tasks {esc(used.get('tasks'))}, seeds "
                   f"{esc(used.get('seeds'))}, betas {esc(used.get('betas'))}).</p>")
        out.extend(f"<p class='note small'>{esc(w)}</p>" for w in h.get("warnings", []))
        out.append(comparison_table(h["table"], caption="Pooled over every held-out setting (seeds resampled within each setting)."))
        per = h.get("per_setting") or {}
        if len(per) > 1:
            for key, t in per.items():
                out.append(f"<h3>Setting {esc(key)}</h3>" + comparison_table(t))
        if h.get("transfer"):
            out.append(transfer_section(h["transfer"], h.get("search_metric") or ""))
    c = _read_json(d / COMPARISON_JSON)
    if c is not None:
        keys = ", ".join(s["key"] for s in c.get("settings", []))
        out.append("<h3>disco compare</h3>" + comparison_table(c["table"], caption=f"Settings: {keys}."))
    return "".join(out)


BASELINE_ROW = " class='baseline'"


def transfer_section(transfers: dict, search_metric: str) -> str:
    """Per held-out setting: the search ranking against the held-out one (a table of both), the
    rank correlations with their intervals, and the candidates that beat DPO there."""
    first = next(iter(transfers.values()))
    out = ["<h3>Does the search ranking transfer?</h3>",
           f"<p class='small muted'>Per held-out setting: each objective's search fitness "
           f"({esc(search_metric or 'the campaign fitness')}, from the archive) and its mean held-out "
           f"<b>{esc(first['metric'])}</b>{' (lower is better: ranked negated)' if first.get('oriented') else ''}, "
           "rank 1 = best; Spearman's rho and Kendall's tau-b between the two (+1: the same order, −1: reversed), "
           "each with a 95% percentile bootstrap interval resampling the held-out seeds (the same draw for every "
           "objective), the search fitness held fixed.</p>"]
    for key, t in transfers.items():
        rows = "".join(
            f"<tr{'' if o['kind'] == 'candidate' else BASELINE_ROW}><td>{esc(o['objective'])}</td>"
            f"<td class='num'>{num(o['search_fitness'])}</td><td class='num'>{o['search_rank']:g}</td>"
            f"<td class='num'>{num(o['heldout_mean'])}</td><td class='num'>{o['heldout_rank']:g}</td>"
            f"<td class='num'>{o['n_done']}</td></tr>" for o in t.get("objectives", []))
        out.append(f"<h4>Setting {esc(key)} <span class='muted small'>({t['n_seeds']} held-out seed/setting units)</span></h4>")
        if rows:
            out.append(boxed("<tr><th>objective</th><th>search fitness</th><th>search rank</th>"
                             f"<th>held-out {esc(t['metric'])}</th><th>held-out rank</th><th>runs</th></tr>{rows}"))
        lines = [esc(t[m]["text"]) for m in ("spearman", "kendall") if m in t]
        out.append("<p class='transfer'>" + "<br>".join(lines) + "</p>")
        if t.get("spearman", {}).get("note"):
            out.append(f"<p class='note small'>{esc(t['spearman']['note'])}</p>")
        out.extend(f"<p class='note small'>left out: {esc(e['objective'])} ({esc(e['why'])})</p>"
                   for e in t.get("excluded", []))
        out.append(f"<p>Beat DPO here <span class='muted small'>({esc(t['beats_dpo_what'])})</span>: "
                   f"<b>{esc(', '.join(t['beats_dpo']) or 'none')}</b></p>")
    return "".join(out)


def frontier_section(d: Path) -> str:
    out = ["<h2>Reward versus KL across β</h2>"]
    png = d / FRONTIER_PNG
    sweep = _read_json(d / SWEEP_JSON)
    if png.is_file():
        out.append(img_tag(png.read_bytes(), "reward versus KL frontier", str(png.name)))
    elif sweep is not None:
        import tempfile

        from evaluation.frontier import plot
        with tempfile.TemporaryDirectory() as tmp:
            drawn = plot(sweep["points"], Path(tmp) / FRONTIER_PNG, x=sweep.get("x", "kl"), sft=sweep.get("sft"))
            out.append(img_tag(drawn.read_bytes(), "reward versus KL frontier", "drawn from sweep.json"))
    else:
        out.append(f"<p class='note'>No beta sweep in this directory: run <code>disco sweep --objectives dpo ipo lrml "
                   f"FILE... --out {esc(d)}</code>.</p>")
    if sweep is not None:
        fails = [(p["objective"], p["beta"], f) for p in sweep.get("points", []) for f in p.get("failures", [])]
        out.extend(f"<p class='fail small'>{esc(o)} β={esc(b)} seed {esc(f['seed'])}: {esc(f['reason'])}</p>"
                   for o, b, f in fails)
    return "".join(out)


def symbolic_html(summary: dict) -> str:
    closed = summary.get("closed_form") or {}
    parts = []
    if closed.get("expression"):
        parts.append(f"<p>f(z) = <code>{esc(closed['expression'])}</code> with z = β·ρ "
                     f"<span class='muted small'>({esc(closed.get('method'))})</span></p>")
    else:
        parts.append(f"<p class='muted'>No closed form: {esc(closed.get('reason', 'not available'))}.</p>")
    facts = []
    fp = summary.get("fprime0")
    if isinstance(fp, dict):
        facts.append(f"f′(0) = {esc(fp.get('value'))}")
    for key, entry in (summary.get("limits") or {}).items():
        if isinstance(entry, dict):
            facts.append(f"lim {esc(key)} = {esc(entry.get('value'))}")
    conv = summary.get("convexity")
    if isinstance(conv, dict) and "convex" in conv:
        facts.append(f"convex: {esc(conv['convex'])}")
    if facts:
        parts.append("<p class='small'>" + "; ".join(facts) + "</p>")
    return "".join(parts)


def candidate_card(c: CampaignResults, row: dict) -> str:
    folder = c.folder(row)
    title = f"#{row['id']} {esc(row['name'])}"
    status = row.get("status")
    score = f"fitness {fitness_cell(c, row)}" if status == "done" \
        else f"<span class='fail'>{esc(status)}</span>"
    out = [f"<div class='card'><h3>{title} <span class='muted small'>{score}</span></h3>"]
    if status == "done":
        m = metric_means(row)
        p = paired_dpo(c, row, campaign_noise(c))
        vs = [] if p is None else [f"− DPO {esc(noise.interval_text(p))} ({esc(p['what'])})"
                                   + (" ≈ inside the noise floor" if p.get("within_noise") else "")]
        facts = [f"fitness = {esc(c.metric)}, {esc(interval_words(c, row))}"] + vs + [
            f"<span title='{esc(define(k))}'>{esc(k)} {num(m.get(k))}</span>"
            for k in metric_columns(c) if isinstance(m.get(k), (int, float))]
        out.append(f"<p class='small'>{' · '.join(facts)}</p>")
    if row.get("reason"):
        out.append(f"<p class='{'small' if status == 'done' else 'fail small'}'>{esc(row['reason'][:600])}</p>")
    if row.get("thought"):
        out.append(f"<p><b>Hypothesis.</b> {esc(row['thought'][:2000])}</p>")
    if row.get("code"):
        out.append(f"<pre>{esc(row['code'])}</pre>")
    summaries = sorted(folder.rglob("*_summary.json")) if folder and folder.is_dir() else []
    summary = _read_json(summaries[0]) if summaries else None
    if summary is None and isinstance(row.get("inspection"), dict) and "closed_form" in row["inspection"]:
        summary = row["inspection"]
    if summary:
        out.append(symbolic_html(summary))
    else:
        why = (row.get("inspection") or {}).get("error") or (row.get("inspection") or {}).get("skipped") \
            if isinstance(row.get("inspection"), dict) else None
        out.append(f"<p class='muted small'>No symbolic summary in {esc(row.get('folder'))}"
                   f"{': ' + esc(why) if why else ''}.</p>")
    pngs = sorted(folder.rglob("*.png"))[:MAX_IMAGES_PER_CANDIDATE] if folder and folder.is_dir() else []
    if pngs:
        out.extend(img_tag(p.read_bytes(), f"{row['name']}: {p.name}", str(p.relative_to(c.dir))) for p in pngs)
    elif status not in ("invalid", "duplicate"):
        out.append(f"<p class='muted small'>No plots in {esc(row.get('folder') or 'the candidate folder')} "
                   "(inspection off, failed, or not run yet).</p>")
    out.append("</div>")
    return "".join(out)


def candidates_section(c: CampaignResults) -> str:
    ranked = [r for r in c.leaderboard()]
    rest = [r for r in c.rows if r not in ranked]
    cards = [candidate_card(c, r) for r in ranked + rest]
    return "<h2>Objectives</h2><p class='muted small'>Finished rows by fitness, then the rest; the plots are the " \
           "loss and its gradient in z = β·ρ beside DPO (objectives.inspection).</p>" + "".join(cards)


def glossary_section() -> str:
    """Every metric's one-line definition, from inner_loop.glossary (the README's list is the same)."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in GLOSSARY.items())
    return (f"<h2 id='glossary'>Metrics</h2><p class='muted small'>Also the tooltips of the column headers.</p>"
            f"<dl class='glossary'>{items}<dt>trl/</dt><dd>{esc(TRL_NOTE)}</dd></dl>")


# -- the page -----------------------------------------------------------------------------------

def build_html(c: CampaignResults) -> str:
    fit = fitness_plot(c)
    fit_html = img_tag(fit, "fitness over the campaign") if fit else "<p class='note'>No candidates yet.</p>"
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "".join([
        f"<h1>Campaign report</h1><p class='muted'>{esc(c.dir.resolve())} · written {now}</p>",
        config_section(c), leaderboard_section(c), "<h2>Fitness over the campaign</h2>", fit_html,
        heldout_section(c.dir), frontier_section(c.dir), candidates_section(c), glossary_section()])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>disco report: {esc(c.dir.name)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style>"
            f"<script>{MARK_IMAGES}</script></head><body>{body}</body></html>")


def write_report(directory: str | Path, out: str | Path | None = None,
                 reader: Callable[[str | Path], CampaignResults] = read_campaign) -> Path:
    campaign = reader(directory)
    path = Path(out) if out else Path(directory) / REPORT_HTML
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_html(campaign), encoding="utf-8")
    return path
