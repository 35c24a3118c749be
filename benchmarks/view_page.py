"""Size and speed of a ``fluxprm view`` page for many long traces, measured in a real headless Chromium.

Generates N synthetic R1-style traces of about T tokens each (default 5,000 × 30,000: ~600 MB of JSONL), a
scores file for them as ``fluxprm score --spans`` writes it (seeded rewards on the steps ``prepare`` cuts, so
no model is needed), builds the page with the default page-size guard, then opens it from ``file://`` in
Debian's ``chromium`` driven by Playwright. Prints one JSON object:

- ``build_s``: ``build_page`` wall time (read and join the traces, segment, shorten, write);
- ``page_bytes`` and the guard's counts (``shortened``, ``texts_left_out``, ``traces_left_out``);
- ``first_render_ms``: from navigation start to the frame that paints the list — the timestamp the page's own
  script sets after its first render (``window.fluxprmFirstRender``, ``performance.now()`` based); also
  ``first_contentful_paint_ms`` (Paint Timing API), ``dom_content_loaded_ms`` and ``load_ms`` (Navigation
  Timing) — the page is usable before it has finished loading, since the details come after the app;
- ``open_trace_ms``: opening the first trace (all are about as long) until its steps are painted (``JSON.parse`` of its
  details and rendering of every step);
- ``filter_ms``: choosing 'correct only' (half of the traces) until the list is redrawn;
- ``js_heap_mb``: ``performance.memory.usedJSHeapSize`` after opening the trace.

Usage: ``python benchmarks/view_page.py [--n 5000] [--tokens 30000] [--max-bytes 200000000] [--keep DIR]``.
Tokens are counted with SmolLM2's tokenizer on a sample when its cached ``tokenizer.json`` is present
(``fluxprm score`` creates it), else estimated at 4 characters per token.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from fluxprm.scores import TraceScore
from fluxprm.steps import StepConfig, prepare
from fluxprm.traces import iter_traces
from fluxprm.view import DEFAULT_MAX_BYTES, ViewOptions, build_page

CHROMIUM = os.environ.get("FLUXPRM_CHROMIUM", "/usr/bin/chromium")
CHARS_PER_TOKEN = 4.0  # the estimate when no tokenizer is at hand (English prose; R1 traces are close)

_OPENERS = ["So", "Wait,", "Hmm,", "Let me check:", "Alternatively,", "Now", "But", "Therefore", "Okay,", "First,"]
_CLAUSES = ["the sum of the roots is {a}", "we get x = {a}/{b}", "that gives {a} + {b} = {c}",
            "the discriminant is {a}^2 - 4*{b}*{c}", "substituting back, f({a}) = {c}", "this contradicts the bound of {b}",
            "so the area is {a} times {b}, which is {c}", "I should double-check the case n = {a}",
            "the number of pairs is {c}", "modulo {b} the remainder is {a}", "the triangle has sides {a}, {b} and {c}",
            "dividing both sides by {b} leaves {a}", "the probability is {a}/{c}", "factoring, (x - {a})(x + {b}) = 0"]


def _paragraph(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(1, 7)):
        clause = rng.choice(_CLAUSES).format(a=rng.randint(1, 99), b=rng.randint(2, 50), c=rng.randint(1, 999))
        sentences.append(f"{rng.choice(_OPENERS)} {clause}.")
    return " ".join(sentences)


def _tokenizer():
    """SmolLM2's tokenizer (no torch: the ``tokenizers`` library on the cached ``tokenizer.json``), or None."""
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(Path.home() / ".cache" / "fluxprm" / "smollm2-135m-instruct" / "tokenizer.json"))
    except Exception:
        return None


def generate(path: Path, n: int, tokens: int, seed: int = 0) -> None:
    """N R1-style records (``<think>`` paragraphs, then a short answer) of about ``tokens`` tokens each."""
    rng = random.Random(seed)
    pool = [_paragraph(rng) for _ in range(5000)]
    tok = _tokenizer()
    sample = "\n\n".join(pool[:300])
    chars_per_token = len(sample) / len(tok.encode(sample).ids) if tok else CHARS_PER_TOKEN
    target = int(tokens * chars_per_token)
    models = ["DeepSeek-R1-Distill-Qwen-7B", "Sky-T1-32B-Preview", "QwQ-32B", "s1.1-7B", "OpenThinker-7B"]
    with open(path, "wb") as f:
        for i in range(n):
            paras, size = [], 0
            while size < target * 0.97:
                p = pool[rng.randrange(len(pool))]
                paras.append(p)
                size += len(p) + 2
            answer = "\n\n".join(pool[rng.randrange(len(pool))] for _ in range(rng.randint(3, 8)))
            f.write(orjson.dumps({"id": f"q{i // 8}-{i % 8}", "problem": f"Problem {i // 8}: " + pool[i % len(pool)],
                                  "response": "<think>\n" + "\n\n".join(paras) + "\n</think>\n\n" + answer
                                              + f"\n\nThe answer is \\boxed{{{rng.randint(1, 999)}}}.",
                                  "model": models[i % len(models)], "correct": rng.random() < 0.5}) + b"\n")


def fake_scores(traces: Path, out: Path, seed: int = 0) -> int:
    """Scores with spans for every trace, as ``fluxprm score --spans`` writes them; returns the largest step count."""
    rng = random.Random(seed)
    most = 0
    with open(out, "wb") as f:
        for trace in iter_traces([str(traces)]):
            inp = prepare(trace, StepConfig())
            think = [rng.random() for _ in inp.thinking_steps]
            resp = [rng.random() for _ in inp.response_steps]
            most = max(most, inp.num_steps)
            s = TraceScore(id=trace.id, score=sum(think + resp) / inp.num_steps + 0.5, step_rewards=think + resp,
                           thinking_step_rewards=think, response_step_rewards=resp, trajectory_reward=0.5,
                           num_steps=inp.num_steps, truncated=False, model="synthetic-prm", source=trace.source,
                           line=trace.line, thinking_step_spans=inp.thinking_spans,
                           response_step_spans=inp.response_spans, extra={"correct": trace.correct})
            f.write(orjson.dumps(s.to_json()) + b"\n")
    return most


def count_tokens(traces: Path, sample: int = 20) -> tuple[float, str]:
    """Mean tokens per record over the first ``sample`` records, and how they were counted."""
    texts = []
    with open(traces, "rb") as f:
        for _, line in zip(range(sample), f):
            rec = orjson.loads(line)
            texts.append(rec["problem"] + rec["response"])
    tok = _tokenizer()
    if tok is not None:
        return sum(len(tok.encode(t).ids) for t in texts) / len(texts), "SmolLM2 tokenizer"
    return sum(len(t) for t in texts) / len(texts) / CHARS_PER_TOKEN, f"estimate ({CHARS_PER_TOKEN} chars/token)"


def _wait(page, expression: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.01)


def measure_in_browser(page_path: Path, open_pos: int) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--disable-background-networking",
                                                                     "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(page_path.as_uri(), wait_until="commit", timeout=600_000)
            _wait(page, "window.fluxprmFirstRender !== undefined")
            first = page.evaluate("window.fluxprmFirstRender")
            _wait(page, "document.readyState === 'complete'")
            timing = page.evaluate("""() => {
                const nav = performance.getEntriesByType('navigation')[0];
                const fcp = performance.getEntriesByName('first-contentful-paint')[0];
                return {dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, fcp: fcp ? fcp.startTime : null};
            }""")
            opened = page.evaluate("""(pos) => new Promise(resolve => {
                const t0 = performance.now();
                location.hash = '#t' + pos;
                requestAnimationFrame(() => setTimeout(() => resolve({ms: performance.now() - t0,
                    steps: document.querySelectorAll('.step').length}), 0));
            })""", open_pos)
            heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
            page.evaluate("location.hash = ''")
            _wait(page, "document.querySelectorAll('tr.trace-row').length > 0")
            filtered = page.evaluate("""() => new Promise(resolve => {
                const select = document.getElementById('f-correct');
                const t0 = performance.now();
                select.value = 'correct'; select.dispatchEvent(new Event('change'));
                requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - t0), 0));
            })""")
        finally:
            browser.close()
    return {"first_render_ms": round(first), "first_contentful_paint_ms": timing["fcp"] and round(timing["fcp"]),
            "dom_content_loaded_ms": round(timing["dcl"]), "load_ms": round(timing["load"]),
            "open_trace_ms": round(opened["ms"]), "open_trace_steps": opened["steps"],
            "filter_ms": round(filtered), "js_heap_mb": heap and round(heap / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--tokens", type=int, default=30000)
    ap.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    ap.add_argument("--keep", type=Path, help="write the files here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fluxprm-view-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        traces, scores, page = work / "traces.jsonl", work / "scores.jsonl", work / "page.html"
        t0 = time.perf_counter()
        generate(traces, args.n, args.tokens)
        gen_s = time.perf_counter() - t0
        most_steps = fake_scores(traces, scores)
        tokens, counted = count_tokens(traces)
        t0 = time.perf_counter()
        report = build_page(scores, page, traces=[traces], options=ViewOptions(max_bytes=args.max_bytes))
        build_s = time.perf_counter() - t0
        result = {
            "traces": args.n, "tokens_per_trace": round(tokens), "tokens_counted_by": counted,
            "input_bytes": traces.stat().st_size, "max_steps_per_trace": most_steps,
            "generate_s": round(gen_s, 1), "build_s": round(build_s, 1), "page_bytes": report.bytes,
            "max_bytes": args.max_bytes, "shortened": report.shortened, "texts_left_out": report.texts_left_out,
            "traces_left_out": report.traces_left_out,
            **measure_in_browser(page, 0),  # every trace is about as long as the others
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "chromium": CHROMIUM,
        }
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
