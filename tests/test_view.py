"""``fluxprm view``: the page's data (join, steps, labels, notes), its escaping, the page-size guard, the CLI, no
torch — and the page itself in a real headless Chromium (Debian's ``chromium`` driven by Playwright).

Score files here are made without a model: rewards are seeded numbers on the steps ``prepare`` cuts, with the
spans ``fluxprm score --spans`` would write, so the tests run in seconds and know every expected value.

The browser tests skip when ``chromium`` or the ``playwright`` package is missing (``make dev`` installs both);
in CI (``CI=true``) they fail instead, so a runner without a browser cannot pass silently.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fluxprm.cli import app
from fluxprm.scores import TraceScore
from fluxprm.steps import StepConfig, prepare
from fluxprm.traces import iter_traces
from fluxprm.view import ViewOptions, build_page
from fluxprm.view.data import encode_json
from fluxprm.view.page import water_level

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
SKY = FIXTURES / "skythought_amc23_sample.jsonl"
R1 = FIXTURES / "r1_synthetic.jsonl"
CHROMIUM = os.environ.get("FLUXPRM_CHROMIUM", "/usr/bin/chromium")


# ----------------------------------------------------------------------------- helpers


def fake_scores(traces: Path, out: Path, *, spans: bool = True, steps: StepConfig = StepConfig(), drop: int = 0,
                seed: int = 0, source: str | None = None) -> list[TraceScore]:
    """A score file for ``traces`` as ``fluxprm score [--spans]`` writes it, with seeded rewards.

    ``drop`` marks that many earliest thinking steps dropped (``--long truncate``) on traces that have more.
    """
    rng = random.Random(seed)
    made = []
    for trace in iter_traces([str(traces)]):
        if not hasattr(trace, "problem"):
            continue
        inp = prepare(trace, steps)
        d = drop if len(inp.thinking_steps) > drop else 0
        think = [round(rng.random(), 4) for _ in inp.thinking_steps[d:]]
        resp = [round(rng.random(), 4) for _ in inp.response_steps]
        rewards = think + resp
        s = TraceScore(id=trace.id, score=sum(rewards) / len(rewards), step_rewards=rewards,
                       thinking_step_rewards=think, response_step_rewards=resp, trajectory_reward=0.25,
                       num_steps=inp.num_steps, truncated=bool(d), model="fake-prm", dropped_steps=d,
                       source=source or trace.source, line=trace.line,
                       thinking_step_spans=(inp.thinking_spans or [])[d:] if spans else None,
                       response_step_spans=inp.response_spans if spans else None,
                       extra={"correct": trace.correct} if trace.correct is not None else {})
        made.append(s)
    out.write_text("".join(json.dumps(s.to_json()) + "\n" for s in made), encoding="utf-8")
    return made


def page_data(page: Path) -> tuple[dict, dict[int, dict]]:
    """The index and the details embedded in a page, read back the way the browser reads them."""
    text = page.read_text(encoding="utf-8")
    index = json.loads(re.search(r'<script type="application/json" id="fluxprm-index">(.*?)</script>', text, re.S)[1])
    details = {int(m[1]): json.loads(m[2]) for m in
               re.finditer(r'<script type="application/json" id="fluxprm-d-(\d+)">(.*?)</script>', text, re.S)}
    return index, details


# ----------------------------------------------------------------------------- data


def test_steps_come_from_the_score_spans_and_match_the_rewards(tmp_path):
    scores = fake_scores(SKY, tmp_path / "s.jsonl")
    report = build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[SKY])
    index, details = page_data(tmp_path / "p.html")
    assert report.traces == len(scores) == len(index["rows"]) and report.with_text == len(scores)
    traces = [t for t in iter_traces([str(SKY)]) if hasattr(t, "problem")]
    for pos, (score, trace) in enumerate(zip(scores, traces)):
        row, detail = index["rows"][pos], details[pos]
        assert row["id"] == score.id and row["text"] == "spans" and row["prm"] == "fake-prm"
        assert row["r"] == [round(x, 4) for x in score.step_rewards] and row["nt"] == len(score.thinking_step_rewards)
        assert row["model"] == trace.meta["model"] and row["correct"] == trace.correct
        inp = prepare(trace, StepConfig())
        assert detail["thinking"]["steps"] == inp.thinking_steps and detail["response"]["steps"] == inp.response_steps
        assert detail["problem"] == trace.problem


def test_without_spans_the_trace_is_cut_again_and_a_wrong_segmentation_is_shown_unsegmented(tmp_path):
    fake_scores(SKY, tmp_path / "s.jsonl", spans=False)
    build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[SKY])
    index, details = page_data(tmp_path / "p.html")
    assert {r["text"] for r in index["rows"]} == {"segmented"}
    # Cut differently than when scored: the counts disagree, so no step may be coloured.
    report = build_page(tmp_path / "s.jsonl", tmp_path / "q.html", traces=[SKY],
                        options=ViewOptions(steps=StepConfig(min_chars=400)))
    index, details = page_data(tmp_path / "q.html")
    unsegmented = [r for r in index["rows"] if r["text"] == "unsegmented"]
    assert unsegmented and all("steps" not in (details[r["i"]]["thinking"] or {}) for r in unsegmented)
    assert "Shown unsegmented" in details[unsegmented[0]["i"]]["note"]
    assert any("unsegmented" in n.text for n in report.notes)
    assert any("unsegmented" in n["text"] for n in index["notes"])


def test_dropped_thinking_steps_are_kept_apart_and_marked(tmp_path):
    scores = fake_scores(SKY, tmp_path / "s.jsonl", drop=5)
    build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[SKY])
    index, details = page_data(tmp_path / "p.html")
    traces = [t for t in iter_traces([str(SKY)]) if hasattr(t, "problem")]
    pos = next(i for i, s in enumerate(scores) if s.truncated)
    inp = prepare(traces[pos], StepConfig())
    part = details[pos]["thinking"]
    assert index["rows"][pos]["dropped"] == 5 and part["n_dropped"] == 5
    assert part["steps"] == inp.thinking_steps[5:]
    assert part["dropped"].startswith(inp.thinking_steps[0]) and part["dropped"].endswith(inp.thinking_steps[4])
    # the same without spans: cut again, dropped steps counted in
    fake_scores(SKY, tmp_path / "n.jsonl", drop=5, spans=False)
    build_page(tmp_path / "n.jsonl", tmp_path / "n.html", traces=[SKY])
    _, details = page_data(tmp_path / "n.html")
    assert details[pos]["thinking"]["steps"] == inp.thinking_steps[5:]


def test_a_scores_file_that_does_not_match_its_traces_says_which_keys_are_missing(tmp_path):
    scores = fake_scores(SKY, tmp_path / "s.jsonl")
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    stray = json.loads(lines[0]) | {"id": "not-there", "line": 99}
    wrong = json.loads(lines[1]) | {"id": "another-id"}
    (tmp_path / "m.jsonl").write_text("\n".join([json.dumps(stray), json.dumps(wrong), *lines[2:]]) + "\n")
    result = CliRunner().invoke(app, ["view", str(tmp_path / "m.jsonl"), "--traces", str(SKY),
                                      "-o", str(tmp_path / "p.html")])
    assert result.exit_code == 0, result.output
    assert "not-there" in result.output and f"{SKY}:99" in result.output  # stderr names the missing key
    assert "another-id" in result.output  # a score in the place of another trace is not joined
    assert f"{scores[0].id} ({SKY}:1)" in result.output  # the trace left without a score
    index, details = page_data(tmp_path / "p.html")
    notes = " ".join(n["text"] + " " + " ".join(n["examples"]) for n in index["notes"])
    assert "not-there" in notes and "another-id" in notes
    assert index["rows"][0]["text"] == "none" and 0 not in details


def test_source_paths_spelled_differently_still_join(tmp_path):
    fake_scores(SKY, tmp_path / "s.jsonl", source=str(SKY.resolve()))
    report = build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[os.path.relpath(SKY)])
    assert report.with_text == report.traces


def _labels(scores: list[TraceScore], traces: Path, out: Path, offset_steps: int = 0) -> None:
    recs = []
    for trace in iter_traces([str(traces)]):
        if not hasattr(trace, "problem"):
            continue
        inp = prepare(trace, StepConfig())
        n = len(inp.thinking_steps) + offset_steps
        recs.append({"id": trace.id, "problem": trace.problem, "thinking_steps": inp.thinking_steps[:n],
                     "response_steps": inp.response_steps, "step_rewards": [0.5] * n + [None] * len(inp.response_steps),
                     "components": {"alignment": [0.1] * n, "quality": [0.7] * n, "coherence": [0.9] * n,
                                    "coherence_logp": [-0.1] * n, "weights": [None] * n},
                     "trajectory_reward": 0.75, "rollouts": {"n": 4, "correct": 3}, "correct": trace.correct,
                     "source": trace.source, "line": trace.line, "notes": []})
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_labels_give_teacher_components_per_thinking_step(tmp_path):
    scores = fake_scores(SKY, tmp_path / "s.jsonl")
    _labels(scores, SKY, tmp_path / "l.jsonl")
    build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[SKY], labels=tmp_path / "l.jsonl")
    index, details = page_data(tmp_path / "p.html")
    lab = details[0]["labels"]
    assert lab["aligned"] and lab["alignment"][0] == 0.1 and lab["quality"][0] == 0.7 and lab["coherence"][0] == 0.9
    assert lab["trajectory_reward"] == 0.75 and index["rows"][0]["label"] == 0.75
    # without traces the label's own step texts serve
    build_page(tmp_path / "s.jsonl", tmp_path / "q.html", labels=tmp_path / "l.jsonl")
    index, details = page_data(tmp_path / "q.html")
    assert index["rows"][0]["text"] == "labels" and details[0]["thinking"]["steps"]
    # labels cut differently: kept apart, said so
    _labels(scores, SKY, tmp_path / "l2.jsonl", offset_steps=-1)
    report = build_page(tmp_path / "s.jsonl", tmp_path / "r.html", traces=[SKY], labels=tmp_path / "l2.jsonl")
    _, details = page_data(tmp_path / "r.html")
    assert not details[0]["labels"]["aligned"] and any("different number" in n.text for n in report.notes)


def test_scores_only_page_lists_every_trace_without_text(tmp_path):
    scores = fake_scores(SKY, tmp_path / "s.jsonl")
    report = build_page(tmp_path / "s.jsonl", tmp_path / "p.html")
    index, details = page_data(tmp_path / "p.html")
    assert report.with_text == 0 and len(index["rows"]) == len(scores) and details == {}
    assert {r["text"] for r in index["rows"]} == {"none"}


# ----------------------------------------------------------------------------- escaping and size


def test_json_in_the_page_cannot_close_its_script_tag(tmp_path):
    # (no lone surrogate here: a trace carrying one is rejected when read, before any page sees it)
    nasty = 'a </script><script>alert(1)</script> <!-- <script> \u2028 \x00 {{details}} {{index}} end'
    trace = {"id": "x</script>", "problem": nasty, "response": "<think>" + nasty + "\n\nsecond step is long enough "
             "to stand alone</think>" + nasty}
    (tmp_path / "t.jsonl").write_text(json.dumps(trace) + "\n")
    fake_scores(tmp_path / "t.jsonl", tmp_path / "s.jsonl")
    build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[tmp_path / "t.jsonl"])
    raw = (tmp_path / "p.html").read_bytes()
    assert raw.count(b"</script>") == raw.count(b"<script")  # every tag closes where it should
    assert b"alert(1)</script>" not in raw and b"<!--" not in raw
    index, details = page_data(tmp_path / "p.html")
    assert index["rows"][0]["id"] == "x</script>"
    assert details[0]["problem"].startswith("a </script><script>alert(1)") and "{{details}}" in details[0]["problem"]
    assert encode_json("</") == b'"\\u003c/"'


def test_water_level():
    assert water_level([10, 20, 30], 60) == 30
    assert water_level([10, 20, 30], 50) == 20
    assert water_level([10, 20, 30], 45) == 17
    assert water_level([5, 5], 4) == 2
    assert sum(min(s, water_level([3, 90, 7, 400], 200)) for s in [3, 90, 7, 400]) <= 200


def long_traces(path: Path, n: int = 40) -> None:
    """``n`` R1 traces of 30 paragraphs; every fourth one about ten times longer than the others."""
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "sum", "root", "thus", "wait", "check", "x=3"]
    with open(path, "w") as f:
        for i in range(n):
            paras = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 400 if i % 4 else 3000)))
                     for _ in range(30)]
            f.write(json.dumps({"id": f"t{i}", "problem": f"problem {i}", "response":
                                "<think>" + "\n\n".join(paras) + "</think>The answer is 3."}) + "\n")


def test_the_page_size_guard_shortens_the_longest_texts_and_says_so(tmp_path):
    long_traces(tmp_path / "t.jsonl")
    fake_scores(tmp_path / "t.jsonl", tmp_path / "s.jsonl")
    full = build_page(tmp_path / "s.jsonl", tmp_path / "full.html", traces=[tmp_path / "t.jsonl"])
    limit = full.bytes // 3
    result = CliRunner().invoke(app, ["view", str(tmp_path / "s.jsonl"), "--traces", str(tmp_path / "t.jsonl"),
                                      "-o", str(tmp_path / "p.html"), "--max-bytes", str(limit)])
    assert result.exit_code == 0, result.output
    size = (tmp_path / "p.html").stat().st_size
    assert size <= limit * 1.02, (size, limit)
    assert "page-size guard" in result.output and "shortened" in result.output
    index, details = page_data(tmp_path / "p.html")
    assert any("page-size guard" in n["text"] for n in index["notes"])
    short = [r for r in index["rows"] if r.get("short")]
    assert short and all(r["i"] in details for r in index["rows"])  # every trace keeps some text
    cut = [s for d in details.values() for s in d["thinking"]["steps"] if not isinstance(s, str)]
    assert cut and all(isinstance(c[1], int) and c[1] > 0 for c in cut)
    # step counts never change: every reward still has its step
    assert all(len(details[r["i"]]["thinking"]["steps"]) == r["nt"] for r in index["rows"])
    # a limit too small for readable texts: texts of the last traces are left out, the list is complete
    tiny = build_page(tmp_path / "s.jsonl", tmp_path / "tiny.html", traces=[tmp_path / "t.jsonl"],
                      options=ViewOptions(max_bytes=150_000))
    index, details = page_data(tmp_path / "tiny.html")
    assert tiny.texts_left_out > 0 and len(index["rows"]) == 40 and tiny.bytes <= 150_000 * 1.02
    assert sum(r["text"] == "left_out" for r in index["rows"]) == tiny.texts_left_out


# ----------------------------------------------------------------------------- CLI and imports


def test_cli_refuses_bad_paths(tmp_path):
    fake_scores(SKY, tmp_path / "s.jsonl")
    runner = CliRunner()
    r = runner.invoke(app, ["view", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "p.html")])
    assert r.exit_code == 2 and "input file not found" in r.output
    r = runner.invoke(app, ["view", str(tmp_path / "s.jsonl"), "-o", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 2 and "is the input file" in r.output and "would destroy the input" in r.output
    r = runner.invoke(app, ["view", str(tmp_path / "s.jsonl"), "-o", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory; give a file path" in r.output
    (tmp_path / "a-file").write_text("")
    r = runner.invoke(app, ["view", str(tmp_path / "s.jsonl"), "-o", str(tmp_path / "a-file" / "p.html")])
    assert r.exit_code == 2 and "a-file is a file, not a folder" in r.output, r.output
    (tmp_path / "traces-not-scores.jsonl").write_text(SKY.read_text())
    r = runner.invoke(app, ["view", str(tmp_path / "traces-not-scores.jsonl"), "-o", str(tmp_path / "p.html")])
    assert r.exit_code == 1 and "none of the 7 lines" in r.output and "is a score record" in r.output
    r = runner.invoke(app, ["view", "--help"])
    assert r.exit_code == 0 and "--max-bytes" in r.output and "--min-chars" in r.output and "--traces" in r.output


def test_view_imports_no_torch(tmp_path):
    fake_scores(SKY, tmp_path / "s.jsonl")
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from fluxprm.cli import app\n"
            f"r = CliRunner().invoke(app, ['view', {str(tmp_path / 's.jsonl')!r}, '--traces', {str(SKY)!r}, "
            f"'-o', {str(tmp_path / 'p.html')!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr + done.stdout


# ----------------------------------------------------------------------------- the page in a real browser


def _browser_missing() -> str | None:
    if shutil.which(CHROMIUM) is None and not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found: `apt-get install chromium` (make dev does it where apt is available)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _browser_missing()
    if reason and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} — in CI the browser test must run, not skip")
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Never `playwright install`: the system Chromium, with no background traffic of its own.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--disable-background-networking",
                                                               "--disable-component-update", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


def _wait(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression until it is true. (``page.wait_for_function`` evaluates strings with ``eval`` inside
    the page, which the page's Content-Security-Policy rightly forbids; ``page.evaluate`` is not affected.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def _open(browser, page_path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(page_path.as_uri())
    _wait(page, "window.fluxprmFirstRender !== undefined")
    return page, requests, errors


def test_browser_list_and_trace_page(browser, tmp_path):
    scores = fake_scores(SKY, tmp_path / "s.jsonl", drop=3)
    _labels(scores, SKY, tmp_path / "l.jsonl")
    build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[SKY], labels=tmp_path / "l.jsonl")
    page, requests, errors = _open(browser, tmp_path / "p.html")
    rows = page.locator("tr.trace-row")
    assert rows.count() == len(scores)
    assert page.locator("#legend .legend-bar").is_visible()
    assert page.locator("#legend .legend-ticks").inner_text().split() == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    page.screenshot(path=str(tmp_path / "list.png"))

    # filter and sort
    page.fill("#f-search", scores[2].id if scores[2].id != scores[0].id else "Qwen")
    _wait(page, f"document.querySelectorAll('tr.trace-row').length < {len(scores)}")
    page.fill("#f-search", "")
    _wait(page, f"document.querySelectorAll('tr.trace-row').length === {len(scores)}")
    page.select_option("#f-correct", "incorrect")
    n_wrong = sum(s.extra.get("correct") is False for s in scores)
    assert page.locator("tr.trace-row").count() == n_wrong
    page.select_option("#f-correct", "all")
    page.select_option("#f-sort", "score")
    shown = [float(x) for x in page.locator("tr.trace-row td.score").all_inner_texts()]
    assert shown == sorted(shown)

    # open the first trace in input order
    page.select_option("#f-sort", "input")
    page.locator("tr.trace-row").first.click()
    page.wait_for_selector(".step")
    s = scores[0]
    steps = page.locator(".step")
    assert steps.count() == len(s.step_rewards)
    badges = page.locator(".step .reward").all_inner_texts()
    first = s.dropped_steps + 1
    assert badges[0] == f"T{first} · {s.thinking_step_rewards[0]:.3f}"
    assert badges[-1] == f"R{len(s.response_step_rewards)} · {s.response_step_rewards[-1]:.3f}"
    colours = {page.locator(".step .reward").nth(k).evaluate("e => getComputedStyle(e).backgroundColor")
               for k in range(steps.count())}
    assert len(colours) > 3 and "rgba(0, 0, 0, 0)" not in colours  # coloured, by reward
    assert page.locator(".step").first.get_attribute("title").startswith(f"T{first} · reward ")
    if s.dropped_steps:
        assert page.locator(".dropped").count() == 1
    # teacher components beside the thinking steps, and the click-to-pin detail
    assert "alignment 0.100" in page.locator(".step .teacher").first.inner_text()
    steps.first.click()
    assert page.locator(".step-info").first.is_visible()
    assert "reward" in page.locator(".step-info").first.inner_text()
    page.screenshot(path=str(tmp_path / "trace.png"))
    assert (tmp_path / "trace.png").stat().st_size > 10_000
    # the page's own range spreads the rewards over the colours: the legend and the colours follow
    before = page.locator(".step .reward").first.evaluate("e => getComputedStyle(e).backgroundColor")
    page.select_option("#scale", "page")
    lo, hi = page_data(tmp_path / "p.html")[0]["range"]
    assert page.locator("#legend .legend-ticks").inner_text().split()[0] == f"{lo:.2f}"
    assert page.locator(".step .reward").first.evaluate("e => getComputedStyle(e).backgroundColor") != before

    # a plain answer (no thinking): its page has a response section and no empty "Thinking · 0 steps" one
    plain = next(k for k, x in enumerate(scores) if not x.thinking_step_rewards and not x.dropped_steps)
    page.evaluate(f"location.hash = '#t{plain}'")
    _wait(page, f"document.getElementById('trace-id').textContent === {json.dumps(scores[plain].id)}")
    assert page.locator("#part-thinking").count() == 0 and page.locator("#part-response").is_visible()
    assert "Thinking" not in page.locator("main").inner_text()
    page.evaluate("location.hash = '#t0'")
    _wait(page, f"document.getElementById('trace-id').textContent === {json.dumps(scores[0].id)}")
    assert page.locator("#part-thinking").count() == 1  # a trace with thinking keeps its section

    # keyboard: next trace, back to the list
    page.keyboard.press("j")
    _wait(page, f"document.getElementById('trace-id').textContent === {json.dumps(scores[1].id)}")
    page.keyboard.press("Escape")
    page.wait_for_selector("tr.trace-row")
    assert errors == []
    assert all(url.startswith("file://") for url in requests), requests  # no network, ever
    page.close()


def test_browser_shows_unsegmented_and_shortened_traces(browser, tmp_path):
    fake_scores(R1, tmp_path / "s.jsonl", spans=False)
    report = build_page(tmp_path / "s.jsonl", tmp_path / "p.html", traces=[R1],
                        options=ViewOptions(steps=StepConfig(min_chars=0, separator="\n")))
    page, _, errors = _open(browser, tmp_path / "p.html")
    assert page.locator("#notes .note").count() >= 1
    index, _ = page_data(tmp_path / "p.html")
    bad = next(r for r in index["rows"] if r["text"] == "unsegmented")
    page.evaluate(f"location.hash = '#t{bad['i']}'")
    page.wait_for_selector(".unsegmented")
    assert page.locator(".step").count() == 0 and page.locator(".chip").count() == len(bad["r"])
    assert "Shown unsegmented" in page.locator(".trace-notes").inner_text()
    assert errors == [] and report.traces == len(index["rows"])
    page.close()

    # shortened by the page-size guard: the cut is marked inside the step, every step keeps its reward
    long_traces(tmp_path / "t.jsonl", n=8)
    scores = fake_scores(tmp_path / "t.jsonl", tmp_path / "l.jsonl")
    report = build_page(tmp_path / "l.jsonl", tmp_path / "short.html", traces=[tmp_path / "t.jsonl"],
                        options=ViewOptions(max_bytes=200_000))
    assert report.shortened
    index, _ = page_data(tmp_path / "short.html")
    pos = next(r["i"] for r in index["rows"] if r.get("short"))
    page, _, errors = _open(browser, tmp_path / "short.html")
    assert "page-size guard" in page.locator("#notes").inner_text()
    page.evaluate(f"location.hash = '#t{pos}'")
    page.wait_for_selector(".step")
    assert page.locator(".step").count() == len(scores[pos].step_rewards)
    cut = page.locator(".step .cut").first
    assert "characters left out" in cut.inner_text() and "page-size guard" in cut.get_attribute("title")
    assert errors == []
    page.close()


def test_view_help_states_the_minimums_it_enforces():
    """--max-bytes below 100000 and --page-size below 10 are refused, so the help says so (from the field metadata)."""
    text = " ".join(CliRunner().invoke(app, ["view", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "[default: 200000000; minimum: 100000]" in text and "[default: 100; minimum: 10]" in text
