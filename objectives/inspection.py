"""``disco inspect NAME_OR_FILE --out DIR``: the plot and the summary of one loss.

``<name>`` is the loss's function name (a registry name as is), as ``disco validate`` reports it;
beta defaults to 0.1, the campaign's and ``disco validate``'s default. Writes ``<name>_inspect.png``
(f and df/d(beta*rho) beside DPO, full range and zoomed near 0), ``<name>_summary.json`` and
``<name>_summary.md`` into DIR. The objective is resolved by :func:`objectives.candidate.resolve`
(a Candidate keeps its measured kind): a built-in runs in this process; a file or source is
screened, translated from its AST, and run only inside the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

from objectives.analysis import DEFAULT_BETA, Analysis, analyse
from objectives.base import ObjectiveError
from objectives.candidate import resolve
from objectives.isolation import run
from objectives.plots import plot_profiles
from objectives.registry import UnknownNameError

REFERENCE = "dpo"


def inspect_objective(x, out_dir, beta: float = DEFAULT_BETA) -> dict:
    """Analyse ``x`` (anything :func:`objectives.candidate.resolve` takes), write the PNG, JSON and
    Markdown into ``out_dir``; return the summary."""
    analysis = analyse(x, beta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _safe(analysis.name)
    reference = run(resolve(REFERENCE), "objectives.analysis:profile", float(beta))  # a built-in: in-process
    png = plot_profiles(analysis.profile, reference, out / f"{stem}_inspect.png",
                        name=analysis.name, summary=analysis.summary)
    summary = dict(analysis.summary, files={"plot": png.name, "json": f"{stem}_summary.json",
                                            "markdown": f"{stem}_summary.md"})
    (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{stem}_summary.md").write_text(markdown(summary, analysis))
    return summary


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "objective"


def _value(entry: dict | None) -> str:
    if not entry:
        return "n/a"
    exact = entry.get("exact")
    text = str(entry["value"])
    return f"{text} (= {exact})" if exact not in (None, text, str(entry["value"])) else text


def markdown(summary: dict, analysis: Analysis | None = None) -> str:
    """The summary as a short Markdown report."""
    s, closed = summary, summary["closed_form"]
    lines = [f"# {s['name']}", "", f"beta = {s['beta']:g}; x axis z = beta * rho; kind: {s['kind']}; "
             f"code ran: {s.get('code_ran', 'n/a')}", ""]
    if s.get("note"):
        lines += [f"> {s['note']}", ""]
    lines += ["## Closed form", ""]
    if closed.get("latex"):
        gap = closed["checked_against_code"]["max_relative_gap"]
        lines += [f"$$f(z) = {closed['latex']}$$", "",
                  f"Method: {closed['method']}. Depends on beta only through z: "
                  f"{closed['beta_only_through_z']}. Largest relative gap to the code at "
                  f"z = {closed['checked_against_code']['z']}: {gap if gap is None else f'{gap:.1e}'}.", ""]
    else:
        where = f" (line {closed['line']})" if closed.get("line") else ""
        lines += [f"No closed form: {closed.get('reason', '')}{where}. Numbers below are numeric.", ""]
        if closed.get("latex_in_logps"):
            lines += [f"In the four log-probs: $${closed['latex_in_logps']}$$", ""]
    ext, conv = s["extrema"], s["convexity"]

    def points(which):
        return ", ".join(f"z = {p['z']} (f = {p['f']})" for p in ext[which]) or "none"
    lines += ["## Shape", "", "| quantity | value | method |", "|---|---|---|",
              f"| f(0) | {s['f0']} | numeric |",
              f"| f'(0) = df/dz at 0 | {_value(s['fprime0'])} | {s['fprime0']['method']} |",
              f"| local minima | {points('minima')} | {ext['method']} |",
              f"| local maxima | {points('maxima')} | numeric |",
              f"| convex on [-10, 10] | {conv['convex']}"
              + (f"; concave on {conv['concave_on']}" if conv["concave_on"] else "")
              + f" | {conv['method']} |"]
    for key, entry in s["limits"].items():
        lines.append(f"| limit {key} | {_value(entry)} | {entry['method']} |")
    if "files" in s:
        lines += ["", f"![loss and gradient]({s['files']['plot']})"]
    return "\n".join(lines) + "\n"


def main_inspect(args) -> int:
    """Entry point of ``disco inspect``: 0 on success, 2 when the loss is refused or fails to run."""
    try:
        summary = inspect_objective(args.objective, args.out, beta=args.beta)
    except (ObjectiveError, UnknownNameError) as err:
        if args.json:
            print(json.dumps({"ok": False, "error": str(err)}))
        else:
            print(f"disco inspect: {err}")
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    ext, lim = summary["extrema"], summary["limits"]
    print(f"{summary['name']} (beta = {summary['beta']:g}, kind {summary['kind']})")
    print(f"  closed form: {summary['closed_form'].get('expression') or summary['closed_form']['reason']}")
    print(f"  f'(0) = {_value(summary['fprime0'])}   convex: {summary['convexity']['convex']}")
    print(f"  minima at z = {[p['z'] for p in ext['minima']]}, maxima at z = {[p['z'] for p in ext['maxima']]}")
    print(f"  limits: rho->+inf {_value(lim['rho->+inf'])}, rho->-inf {_value(lim['rho->-inf'])}"
          + (" (in a fixed batch: see the note)" if summary["kind"] == "batch" else ""))
    if summary.get("note"):
        print(f"  note: {summary['note']}")
    print(f"  wrote {Path(args.out) / summary['files']['plot']} and the summary (.json, .md)")
    return 0
