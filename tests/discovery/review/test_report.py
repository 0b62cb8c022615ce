"""`report`, `plot` and `compare` on the runs tests/review_runs.py builds: the report in headless Chromium
(renders, one row per candidate, no console message, no network request, an LLM reply's `<script>` shown as
text, a screenshot kept), the loop's per-generation rewrite, a run still being written, the figures, and runs
or retrain outputs side by side."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from lossforge.discovery.review.report import render_report
from lossforge.discovery.review.snapshot import open_run
from lossforge.discovery.review.summary import score_of
from lossforge.discovery.storage.archive import Archive
from lossforge.discovery.storage.run_lock import RunLock
from matplotlib.image import imread

from tests.review_runs import HOSTILE, TINY, assert_usage_error, cli

CHROMIUM = shutil.which("chromium")
QUIET = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=3000",
]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


def _rows(html: str) -> int:
    return len(re.findall(r'<tr class="candidate-row"', html))


def _chromium(page: Path, work: Path, *action: str) -> tuple[str, list[str], list[str]]:
    """(stdout, console messages, URLs the page requested) of one headless load of ``page``."""
    netlog = work / f"net-{len(list(work.glob('net-*')))}.json"
    done = subprocess.run(
        [CHROMIUM, *QUIET, f"--log-net-log={netlog}", *action, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    # Requests made by the page carry its file:// isolation key; the browser's own (updates) do not.
    requested = [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start_job and "file://" in str(e["params"].get("network_isolation_key", ""))
    ]
    return done.stdout, console, requested


def _evaluate(page: Path, expressions: list[str]) -> list[object]:
    """Load ``page`` in headless Chromium and evaluate each JavaScript expression in turn, through the DevTools
    protocol over ``--remote-debugging-pipe`` (NUL-separated JSON on fds 3 and 4; no websocket client needed)."""
    to_browser, from_browser = os.pipe(), os.pipe()

    def child_fds() -> None:
        os.dup2(to_browser[0], 3)
        os.dup2(from_browser[1], 4)

    # preexec_fn: the pipe must sit on fds 3 and 4 in the child, where Chromium looks for it (no other thread
    # of the test process runs meanwhile).
    browser = subprocess.Popen(
        [CHROMIUM, *QUIET[:5], "--remote-debugging-pipe", "about:blank"],
        pass_fds=(3, 4),
        preexec_fn=child_fds,  # noqa: PLW1509 - see the comment above
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_browser[0])
    os.close(from_browser[1])
    pending = b""

    def call(
        message_id: int, method: str, session: str | None = None, wait_for: str | None = None, **params: object
    ) -> dict:
        nonlocal pending
        message = {"id": message_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(to_browser[1], json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" in pending:
                raw, pending = pending.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == message_id and wait_for is None or wait_for and reply.get("method") == wait_for:
                    return reply
            chunk = os.read(from_browser[0], 1 << 16)
            assert chunk, "chromium closed the DevTools pipe"
            pending += chunk

    try:
        targets = call(1, "Target.getTargets")["result"]["targetInfos"]
        page_target = next(t["targetId"] for t in targets if t["type"] == "page")
        session = call(2, "Target.attachToTarget", targetId=page_target, flatten=True)["result"]["sessionId"]
        call(3, "Page.enable", session)
        call(4, "Page.navigate", session, wait_for="Page.loadEventFired", url=page.resolve().as_uri())
        return [
            call(10 + i, "Runtime.evaluate", session, expression=e, returnByValue=True)["result"]["result"].get("value")
            for i, e in enumerate(expressions)
        ]
    finally:
        os.close(to_browser[1])
        os.close(from_browser[0])
        browser.kill()
        browser.wait(timeout=30)


@needs_chromium
def test_the_probe_sees_console_messages_and_page_requests(tmp_path: Path) -> None:
    # The negative control: without it the report test below could pass with a blind probe.
    page = tmp_path / "leaky.html"
    page.write_text('<img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>')
    _, console, requested = _chromium(page, tmp_path, "--dump-dom")
    assert any('"boom"' in line for line in console) and requested == ["http://127.0.0.1:9/x.png"]


@needs_chromium
def test_report_in_headless_chromium(built: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = cli("report", str(built["llm"]), "--out", str(report), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"report": str(report)}
    html = report.read_text()
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.findall(r"""(?:src|href)=["'](?!#|data:)""", html)  # only in-page links and data: images

    dom, console, requested = _chromium(report, tmp_path, "--dump-dom")
    with Archive.open(built["llm"]) as archive:
        ids = [row.id for row in archive.candidates()]
    assert _rows(dom) == len(ids) and all(f'id="c{i}"' in dom for i in ids)
    assert console == [] and requested == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt; shift the margin" in dom  # text, not an element
    assert dom.count("<script>") == 1  # the sorting script only
    assert dom.count('<img alt="') >= 3  # loss curves, scores, confirmation, LLM usage
    assert "1 confirmation trainings archived" in dom
    assert "beats dpo on tiny by +0.031" in dom and 'style="color:' in dom  # Pygments' inline styles
    assert 'id="models-table"' in dom and "<td>fake-model</td>" in dom  # each LLM model's record

    shot = tmp_path / "report.png"
    _chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert imread(shot).shape[:2] == (2400, 1280)
    print(f"report screenshot: {shot}")


@needs_chromium
def test_report_sorts_by_a_clicked_column(built: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    assert cli("report", str(built["llm"]), "--out", str(report)).exit_code == 0
    ids = "Array.from(document.querySelectorAll('#leaderboard-table tbody tr')).map(r => +r.dataset.id)"
    header = "document.querySelectorAll('#leaderboard-table th')"
    by_id = f"{header}[1].click(); {ids}"
    by_score = f"{header}[5].click(); {ids}"
    ranked, ascending, descending, low_first = _evaluate(report, [ids, by_id, by_id, by_score])
    with Archive.open(built["llm"]) as archive:
        rows = archive.candidates()
    assert ascending == sorted(ranked) == [row.id for row in rows] and descending == ascending[::-1]
    best = max((r for r in rows if r.status == "ok"), key=score_of)  # squared, by its multi-seed mean
    unscored = {r.id for r in rows if r.status != "ok"}
    assert low_first[-1] == best.id and set(low_first[: len(unscored)]) == unscored  # missing scores sort lowest


def test_the_loop_rewrites_the_report_and_survives_a_failed_write(built: dict[str, Path]) -> None:
    written = (built["evolve"] / "report.html").read_text()  # by the loop, after its last generation
    with Archive.open(built["evolve"]) as archive:
        assert _rows(written) == len(archive.candidates())
    assert not list(built["evolve"].glob(".report.html.*"))  # the temporary file was renamed
    notes = json.loads((built["blocked"] / "notes.json").read_text())
    assert any(note.startswith("report.html not updated: IsADirectoryError") for note in notes), notes


def test_the_loops_rewrites_run_in_the_background_and_collapse(
    built: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lossforge.discovery.review import report as report_module

    run_dir = tmp_path / "run"
    shutil.copytree(built["evolve"], run_dir)
    (run_dir / "report.html").unlink()
    release, started, rewrites = threading.Event(), threading.Event(), []
    real = report_module.refresh_report

    def held(path: Path) -> str | None:  # the real rewrite, held until the test lets it go
        started.set()
        release.wait(60)
        rewrites.append(path)
        return real(path)

    monkeypatch.setattr(report_module, "refresh_report", held)
    notes: list[str] = []
    reports = report_module.BackgroundRefresh(run_dir, notes.append, min_interval_s=0)
    reports.request()
    assert started.wait(60)  # the first rewrite runs while request() has long returned
    for _ in range(5):  # requests during a rewrite collapse into one more
        reports.request()
    assert not (run_dir / "report.html").exists()
    release.set()
    reports.close(finish_queued=True)
    assert rewrites == [run_dir, run_dir] and not notes
    with Archive.open(run_dir) as archive:
        assert _rows((run_dir / "report.html").read_text()) == len(archive.candidates())

    rewrites.clear()
    reports = report_module.BackgroundRefresh(run_dir, notes.append, min_interval_s=3600)
    for _ in range(3):  # none before an hour since the start: the queued one is dropped when the run closes it
        reports.request()
    reports.close()
    assert rewrites == []

    (run_dir / "report.html").unlink()
    (run_dir / "report.html").mkdir()  # a rewrite that fails is a note, never an exception in the run
    release.set()
    monkeypatch.setattr(report_module, "refresh_report", real)
    reports = report_module.BackgroundRefresh(run_dir, notes.append, min_interval_s=0)
    reports.request()
    reports.close(finish_queued=True)
    assert len(notes) == 1 and notes[0].startswith("report.html not updated: IsADirectoryError"), notes


def test_a_run_being_written_is_read_as_one_snapshot(built: dict[str, Path], tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(built["llm"], live)
    lock = RunLock(live).acquire()
    stop = threading.Event()

    def write_rows() -> None:  # a loop still proposing: pending rows keep arriving
        with Archive.open(live) as archive:
            for index in range(10_000):
                if stop.is_set():
                    return
                archive.add_candidate(generation=3, idx=index, name=f"pending_{index}", status="pending")

    writer = threading.Thread(target=write_rows)
    writer.start()
    try:
        for _ in range(3):
            with open_run(live) as snapshot:
                html = render_report(snapshot)
            assert _rows(html) == html.count('<section class="candidate"')  # one snapshot for every part
        runs = json.loads(cli("runs", str(live), "--json").stdout)
        assert runs["state"] == "running" and runs["counts"]["pending"] > 0 and runs["generations_done"] == 2
        board = [json.loads(line) for line in cli("leaderboard", str(live), "--all", "--json").stdout.splitlines()]
        assert {"pending", "ok"} <= {e["status"] for e in board}
    finally:
        stop.set()
        writer.join()
        lock.release()
    assert json.loads(cli("runs", str(live), "--json").stdout)["state"] == "interrupted"  # killed mid-generation


def test_plot_writes_readable_pngs(built: dict[str, Path], tmp_path: Path) -> None:
    result = cli("plot", str(built["llm"]), "--out", str(tmp_path / "figs"), "--top", "3", "--json")
    assert result.exit_code == 0, result.output
    names = {Path(p).stem for p in json.loads(result.stdout)["figures"]}
    assert names == {"loss_curves", "scores", "confirmation", "llm_usage"}  # no reward/KL on the tiny task
    for path in (tmp_path / "figs").glob("*.png"):
        assert imread(path).shape[:2] == (450, 800)
    evolve = cli("plot", str(built["evolve"]), "--out", str(tmp_path / "evo"), "--json")
    assert {Path(p).stem for p in json.loads(evolve.stdout)["figures"]} == {"loss_curves", "scores"}

    sentiment = tmp_path / "sentiment"
    with Archive.open(sentiment) as archive:
        archive.set_meta("config", {"training": {"task": "sentiment", "beta": 0.1}})
        for i, (reward, kl) in enumerate([(0.2, 1.0), (0.5, 2.0), (0.4, 3.0)]):
            archive.add_candidate(
                generation=0,
                idx=i,
                name=f"c{i}",
                status="ok",
                score=reward,
                metrics={"reward": reward, "kl": kl, "grammatical": 1.0},
            )
    drawn = json.loads(cli("plot", str(sentiment), "--json").stdout)["figures"]
    assert {Path(p).stem for p in drawn} == {"scores", "reward_kl"} and Path(drawn[0]).parent == sentiment / "figures"


def test_compare_runs_and_retrain_outputs(built: dict[str, Path], tmp_path: Path) -> None:
    figure = tmp_path / "best.png"
    result = cli("compare", str(built["llm"]), str(built["evolve"]), "--figure", str(figure), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "runs" and data["task"] == TINY and data["generations"] == [0, 1, 2]
    llm, evolve = data["runs"]
    assert (llm["proposer"], evolve["proposer"]) == ("openai", "evolve")
    assert len(llm["best_by_generation"]) == len(evolve["best_by_generation"]) == 3
    assert llm["best_by_generation"][0] == evolve["best_by_generation"][0]  # the same seeds, cached
    assert llm["trained"] == 9 and evolve["trained"] == 6 and llm["llm"]["cost_usd"] > 0
    assert imread(figure).shape[:2] == (450, 800)
    table = cli("compare", str(built["llm"]), str(built["evolve"]))
    assert "best score so far, by generation" in table.stdout and "evolve - llm" in table.stdout

    first, second = tmp_path / "a", tmp_path / "b"
    for directory, accuracy in ((first, 0.5), (second, 0.75)):
        directory.mkdir()
        (directory / "metrics.json").write_text(
            json.dumps(
                {
                    "kind": "retrain",
                    "candidate": directory.name,
                    "model": "tiny",
                    "dataset": "pairs.jsonl",
                    "recipe": "lora",
                    "metrics": {"pref_accuracy": accuracy, "margin": 1.0},
                }
            )
        )
    data = json.loads(cli("compare", str(first), str(second), "--json").stdout)
    assert data["kind"] == "retrain" and data["models"][1]["difference"] == {"pref_accuracy": 0.25, "margin": 0.0}
    assert "0.25" in cli("compare", str(first), str(second)).stdout

    assert_usage_error(cli("compare", str(built["llm"]), str(first)), "not both", "is a retrain output")
    other = tmp_path / "sentiment"
    with Archive.open(other) as archive:
        archive.set_meta("config", {"training": {"task": "sentiment"}})
    assert_usage_error(cli("compare", str(built["llm"]), str(other)), "different tasks", "'sentiment'")
    assert_usage_error(cli("compare", str(built["llm"])), "at least two")
    assert_usage_error(cli("compare", str(built["llm"]), str(tmp_path)), "neither a run directory")
