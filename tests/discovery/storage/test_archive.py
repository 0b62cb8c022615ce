"""Archive: rows, JSON columns, contract files, crash safety, run lock, seed cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lossforge.candidates import BUILTIN_DIR, read_metadata
from lossforge.discovery.search.ranking import best_first
from lossforge.discovery.storage.archive import Archive, ArchiveError
from lossforge.discovery.storage.candidate_files import contract_file_text
from lossforge.discovery.storage.run_lock import RunLock, RunLockError
from lossforge.discovery.storage.seed_cache import SeedCache

DPO_CODE = (BUILTIN_DIR / "dpo.py").read_text(encoding="utf-8")


@pytest.fixture()
def archive(tmp_path: Path) -> Archive:
    with Archive.open(tmp_path / "run") as opened:
        yield opened


def test_add_get_update_roundtrip(archive: Archive) -> None:
    cid = archive.add_candidate(generation=1, idx=2, name="evo_g1_i2", code=DPO_CODE, thought="why", parents=[4, 5])
    row = archive.get(cid)
    assert row is not None and row.status == "pending" and row.proposal_key == "g1-i2-r0"
    assert row.parents == (4, 5) and row.metrics == {}
    archive.update_candidate(cid, status="ok", score=0.25, metrics={"kl": 1.5}, profile={"convex": True})
    row = archive.get(cid)
    assert row.status == "ok" and row.score == 0.25 and row.metrics == {"kl": 1.5} and row.profile == {"convex": True}
    assert archive.by_key("g1-i2-r0") == row
    assert archive.by_key("g9-i9-r0") is None and archive.get(999) is None


def test_writes_are_validated(archive: Archive) -> None:
    with pytest.raises(ArchiveError, match="status 'great' is not one of pending, ok"):
        archive.add_candidate(generation=0, idx=0, status="great")
    with pytest.raises(ArchiveError, match=r"unknown candidate field\(s\) \['colour'\]"):
        archive.add_candidate(generation=0, idx=0, colour="red")
    archive.add_candidate(generation=0, idx=0)
    with pytest.raises(ArchiveError, match="g0-i0-r0"):
        archive.add_candidate(generation=0, idx=0)
    with pytest.raises(ArchiveError, match="no candidate with id 42"):
        archive.update_candidate(42, status="ok")


def test_queries(archive: Archive) -> None:
    ids = {}
    for idx, (status, score, fp) in enumerate(
        [
            ("ok", 0.1, "a"),
            ("ok", 0.9, "b"),
            ("rejected", None, "c"),
            ("duplicate", None, "b"),
            ("diverged", None, "d"),
            ("ok", 0.5, "e"),
            ("pending", None, None),
        ]
    ):
        ids[idx] = archive.add_candidate(generation=idx // 4, idx=idx % 4, status=status, score=score, fingerprint=fp)
    assert [r.id for r in best_first(archive.candidates())[:2]] == [ids[1], ids[5]]  # the archive stores, never ranks
    assert [r.id for r in archive.recent(3)] == [ids[3], ids[4], ids[5]]  # oldest first, pending left out
    assert [r.id for r in archive.candidates(status="ok")] == [ids[0], ids[1], ids[5]]
    assert [r.id for r in archive.candidates(generation=1)] == [ids[4], ids[5], ids[6]]
    assert archive.find_by_fingerprint("b").id == ids[1]  # the original, not the duplicate row
    assert archive.find_by_fingerprint("b", exclude_id=ids[1]) is None
    assert archive.find_by_fingerprint("c") is None  # rejected rows never reached training
    assert archive.find_by_fingerprint("d").id == ids[4]


def test_reset_pending_clears_outcome_keeps_proposal(archive: Archive) -> None:
    cid = archive.add_candidate(
        generation=1, idx=0, code=DPO_CODE, name="x", stage="sandbox", fingerprint="f", metrics={"m": 1.0}
    )
    done = archive.add_candidate(generation=1, idx=1, status="ok", score=1.0, fingerprint="g")
    requeued = archive.reset_pending()
    assert [r.id for r in requeued] == [cid]
    assert requeued[0].code == DPO_CODE and requeued[0].stage is None and requeued[0].fingerprint is None
    assert requeued[0].metrics == {}
    assert archive.get(done).fingerprint == "g"


def test_seed_runs_keep_only_reproducible_outcomes_by_steps(archive: Archive) -> None:
    cid = archive.add_candidate(generation=1, idx=0, code="x = 1", status="pending")
    ok = {"status": "ok", "score": 0.5, "metrics": {"kl": 0.1}, "timings": {}, "error": None, "stderr_tail": None}
    archive.record_seed_run(cid, 8, 11, ok, 1.0, 2.0)
    archive.record_seed_run(cid, 8, 12, {**ok, "status": "diverged", "score": None}, 2.0, 3.0)
    archive.record_seed_run(cid, 8, 13, {**ok, "status": "failed", "score": None}, 3.0, 4.0)  # the machine's, maybe
    archive.record_seed_run(cid, 8, 14, {**ok, "status": "timeout", "score": None}, 4.0, 5.0)
    archive.record_seed_run(cid, None, 11, {**ok, "score": 0.7}, 5.0, 6.0)  # the task's default steps
    stored = archive.seed_runs(cid, 8)
    assert sorted(stored) == [11, 12] and stored[11] == {"result": ok, "started": 1.0, "ended": 2.0}
    assert archive.seed_runs(cid, None)[11]["result"]["score"] == 0.7 and archive.seed_runs(cid, 2) == {}


def test_code_file_is_promotable_contract_format(archive: Archive) -> None:
    cid = archive.add_candidate(
        generation=2, idx=0, name="evo g2/i0", code=DPO_CODE, thought='a "new" idea', parents=[3, 7], proposer="evolve"
    )
    path = archive.code_path(cid)
    assert path is not None and path.name == f"{cid}_evo_g2_i0.py"
    text = path.read_text(encoding="utf-8")
    meta = read_metadata(text)
    assert meta["NAME"] == "evo g2/i0" and meta["DESCRIPTION"] == 'a "new" idea'
    assert meta["ORIGIN"] == "evolve" and meta["PARENTS"] == ["3", "7"]
    assert text.count("NAME =") == 1 and "def loss(" in text
    namespace: dict[str, object] = {}
    exec(compile(text, str(path), "exec"), namespace)  # noqa: S102 - our own library code, rewritten
    assert callable(namespace["loss"])
    archive.update_candidate(cid, name="renamed")
    assert [p.name for p in archive.code_dir.glob(f"{cid}_*.py")] == [f"{cid}_renamed.py"]


def test_llm_origin_and_missing_files_restored_on_open(tmp_path: Path) -> None:
    with Archive.open(tmp_path / "run") as archive:
        call = archive.record_llm_row({"model": "qwen2.5-7b", "reply": "{}"})
        cid = archive.add_candidate(
            generation=1, idx=0, name="llm_loss", code=DPO_CODE, proposer="openai", prompt_id=call
        )
        path = archive.code_path(cid)
        assert path is not None and read_metadata(path.read_text())["ORIGIN"] == "llm:qwen2.5-7b"
        path.unlink()  # as if the run was killed between the row's commit and the file write
    with Archive.open(tmp_path / "run") as archive:
        assert archive.code_path(cid) == path and path.is_file()


def test_contract_file_text_inserts_after_imports_and_keeps_unparsable_code() -> None:
    code = '"""doc"""\nimport torch\n\n\ndef loss(a, b, c, d, beta):\n    return a - b\n'
    text = contract_file_text(code, name="n", description="d", origin="llm:m", parents=[])
    assert text.index("import torch") < text.index('NAME = "n"') < text.index("def loss")
    broken = contract_file_text("def loss(:\n", name="n", description="", origin="", parents=["1"])
    assert broken.startswith("# This proposal does not parse") and "def loss(:" in broken


def test_llm_calls_and_totals(archive: Archive) -> None:
    assert archive.llm_totals() == (0, 0, 0.0)
    first = archive.record_llm_row(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "reply": "{}",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost_usd": 0.01,
            "latency_s": 0.2,
        }
    )
    archive.record_llm_row({"model": "m", "error": "429 rate limited", "attempts": 3})
    assert archive.llm_totals() == (2, 15, pytest.approx(0.01))
    assert archive.llm_call(first)["messages"] == [{"role": "user", "content": "hi"}]
    cid = archive.add_candidate(generation=1, idx=0, prompt_id=first)
    assert archive.get(cid).prompt_id == first
    with pytest.raises(ArchiveError, match="unknown llm_calls field"):
        archive.record_llm_row({"modle": "m"})


def test_meta_and_provenance(archive: Archive) -> None:
    archive.write_provenance({"seed": 3})
    created = archive.get_meta("created")
    archive.write_provenance({"seed": 3})
    assert archive.get_meta("config") == {"seed": 3}
    assert archive.get_meta("created") == created  # resume keeps the original creation time
    assert "torch" in archive.get_meta("versions")
    assert archive.get_meta("missing", "dflt") == "dflt"


_WRITER = """
import sys
from lossforge.discovery.storage.archive import Archive
archive = Archive.open(sys.argv[1])
for i in range(100000):
    cid = archive.add_candidate(generation=i, idx=0, code="x = 1\\n", name=f"c{i}")
    archive.update_candidate(cid, status="ok", score=float(i))
    print(cid, flush=True)
"""


def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    reported = [int(child.stdout.readline()) for _ in range(30)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reported += [int(line) for line in child.stdout.read().split()]
    with Archive.open(run_dir) as archive:
        rows = {r.id: r for r in archive.candidates()}
        for cid in reported:  # every id the writer saw committed is there, with its update and its file
            assert rows[cid].status == "ok" and rows[cid].score == float(cid - 1)
            assert archive.code_path(cid) is not None


def test_run_lock_is_exclusive_and_released_on_kill(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    in_use = rf"run directory {run_dir} is in use by a live run \(pid {os.getpid()}\); wait for it to finish or pass"
    with RunLock(run_dir), pytest.raises(RunLockError, match=in_use):
        RunLock(run_dir).acquire()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from lossforge.discovery.storage.run_lock import RunLock
            RunLock({str(run_dir)!r}).acquire(); print("held", flush=True); time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockError, match=f"pid {holder.pid}"):
        RunLock(run_dir).acquire()
    holder.kill()
    holder.wait()
    lock = RunLock(run_dir).acquire()  # the kernel released the dead holder's lock
    assert lock.held
    lock.release()


def test_seed_cache_roundtrip_and_keying(tmp_path: Path) -> None:
    from lossforge.evaluate.training.result import RunResult

    cache = SeedCache(tmp_path)
    budget = {"steps": 20, "eval_samples": 16}
    assert cache.get("sentiment", "fp", 0.1, 0, budget) is None
    assert cache.put("sentiment", "fp", 0.1, 0, budget, RunResult(status="ok", score=0.7, metrics={"kl": 2.0}))
    assert cache.get("sentiment", "fp", 0.1, 0, budget)["score"] == 0.7
    assert cache.get("sentiment", "fp", 0.1, 1, budget) is None  # another seed
    assert cache.get("sentiment", "fp", 0.2, 0, budget) is None  # another beta
    assert cache.get("sentiment", "fp", 0.1, 0, {**budget, "steps": 40}) is None  # another budget
    assert cache.get("arithmetic", "fp", 0.1, 0, budget) is None
    assert not cache.put("sentiment", "fp2", 0.1, 0, budget, {"status": "timeout"})  # machine-dependent outcome
    assert cache.get("sentiment", "fp2", 0.1, 0, budget) is None
    assert list((tmp_path / "seed_results").glob("*.json"))
