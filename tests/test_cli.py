import subprocess
import sys
from pathlib import Path

import orjson
import pytest

COMMANDS = [
    [],
    ["compile"],
    ["run"],
    ["demo"],
    ["registry"],
    ["registry", "list"],
    ["registry", "rollback"],
    ["registry", "promote"],
    ["registry", "promote-canary"],
    ["submit"],
    ["score"],
    ["compare"],
    ["errors"],
    ["errors", "ingest"],
    ["base-model", "train"],
    ["serve"],
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flywheel_pipelines.cli", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(command: list[str]) -> None:
    out = cli(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    if command and command[-1] not in ("registry", "errors", "score", "compare"):
        assert "--config" in out.stdout


USER_ERRORS = [
    (["registry", "list", "--config", "/no/such.yaml"], "config file not found"),
    (["run"], "run needs --config"),
    (["errors", "ingest", "/no/such.jsonl"], "no such file"),
]


@pytest.mark.parametrize(("args", "message"), USER_ERRORS)
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 1
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_invalid_config_key_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("trigger:\n  min_eror_cases: 3\n")
    out = cli("registry", "list", "--config", str(bad))
    assert out.returncode == 1 and "trigger.min_eror_cases" in out.stderr


def test_ingest_and_list_json(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  root: {tmp_path / 'state'}\n")
    records = tmp_path / "r.jsonl"
    good = {
        "id": "a",
        "audio_uri": "/x.wav",
        "hypothesis": "hi",
        "corrected_text": "high",
        "timestamp": "2026-11-01T00:00:00Z",
    }
    records.write_bytes(orjson.dumps(good) + b"\n{broken\n" + orjson.dumps(good) + b"\n")
    out = cli("errors", "ingest", str(records), "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    assert (result["read"], result["accepted"], result["duplicates"], result["quarantined"]) == (3, 1, 1, 1)
    assert result["quarantine"][0]["reason"] == "invalid_json"
    listed = cli("registry", "list", "--config", str(config), "--json")
    assert listed.returncode == 0 and orjson.loads(listed.stdout) == {
        "versions": [],
        "aliases": {},
        "traffic": {},
    }


def test_compile_writes_yaml(tmp_path: Path) -> None:
    out = cli("compile", "--output", str(tmp_path / "p.yaml"))
    assert out.returncode == 0, out.stderr
    assert "deploy-model" in (tmp_path / "p.yaml").read_text()


REF = "the cat sat on the mat (u1)\nhello world (u2)\nTwenty one tablets (u3)\n"
HYP_A = "the cat sat on mat (u1)\nhello word (u2)\n21 tablets (u3)\n"
HYP_B = '{"id": "u1", "text": "a cat sat on the mat"}\n{"id": "u2", "text": "hello world"}\n{"id": "u3", "text": "twenty one tablet"}\n'


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    paths = tmp_path / "ref.trn", tmp_path / "a.trn", tmp_path / "b.jsonl"
    for path, text in zip(paths, (REF, HYP_A, HYP_B), strict=True):
        path.write_text(text)
    return paths


def test_score_prints_counts(tmp_path: Path) -> None:
    ref, a, _ = _files(tmp_path)
    out = cli("score", "--ref", str(ref), "--hyp", str(a), "--json")
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    # whisper-en/1: "twenty one" == "21"; u1 loses "the", u2 "world" -> "word"
    assert (result["hits"], result["substitutions"], result["deletions"], result["insertions"]) == (
        8,
        1,
        1,
        0,
    )
    assert (
        result["wer"] == 0.2 and result["normalizer"] == "whisper-en/1" and result["raw_wer"] > result["wer"]
    )
    basic = orjson.loads(
        cli("score", "--ref", str(ref), "--hyp", str(a), "--normalizer", "basic-en", "--json").stdout
    )
    assert (basic["substitutions"], basic["deletions"], basic["normalizer"]) == (2, 2, "basic-en/1")


def test_compare_reports_interval_and_tests(tmp_path: Path) -> None:
    ref, a, b = _files(tmp_path)
    out = cli("compare", "--ref", str(ref), "--hyp-a", str(a), "--hyp-b", str(b), "--json")
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    assert result["wer_a"] == result["wer_b"] == 0.2 and result["delta_wer"] == 0.0
    assert result["interval"]["low"] <= 0.0 <= result["interval"]["high"]
    assert set(result["p_values"]) == {"wilcoxon", "t_test", "mapsswe"}
    assert (result["a_better"], result["a_worse"]) == (1, 1)


def test_score_rejects_mismatched_ids(tmp_path: Path) -> None:
    ref, _, _ = _files(tmp_path)
    other = tmp_path / "other.trn"
    other.write_text("x (u9)\n")
    out = cli("score", "--ref", str(ref), "--hyp", str(other))
    assert out.returncode == 1 and "3 reference ids have no hypothesis" in out.stderr
    assert "Traceback" not in out.stderr
