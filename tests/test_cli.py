"""The CLI as a user meets it: `main()` in-process with real argv, files and state; one subprocess check."""

import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import typer.main
from conftest import Cli

from flywheel_pipelines.cli import EXAMPLES, app, main
from stt_flywheel.config import load_config
from stt_flywheel.deployment.backends import open_endpoint, open_registry

# command -> whether it takes --config (it reads or writes the flywheel's state)
COMMANDS = [
    (["compile"], False),
    (["run"], True),
    (["demo"], False),
    (["registry", "list"], True),
    (["registry", "rollback"], True),
    (["registry", "promote"], True),
    (["registry", "promote-canary"], True),
    (["submit"], True),
    (["score"], False),
    (["compare"], False),
    (["errors", "ingest"], True),
    (["base-model", "train"], False),
    (["serve"], True),
    (["template", "publish"], False),
    (["schedule", "create"], True),
    (["schedule", "list"], True),
]


@pytest.mark.parametrize(("command", "takes_config"), COMMANDS, ids=[" ".join(c) for c, _ in COMMANDS])
def test_each_command_takes_config_only_if_it_uses_it(
    cli: Cli, command: list[str], takes_config: bool
) -> None:
    status, out, _ = cli(*command, "--help")
    assert status == 0
    assert "Usage" in out
    assert ("--config" in out) is takes_config


def test_the_installed_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flywheel_pipelines.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "registry" in out.stdout


USER_ERRORS = [
    (["registry", "list", "--config", "/no/such.yaml"], "config file not found"),
    (["errors", "ingest", "/no/such.jsonl"], "no such file"),
    (["registry", "promote", "--reason", "x", "--version", "1", "--run", "r"], "exactly one of --version"),
    (["serve", "--model-dir", "/no/such/model"], "no saved model"),
]


@pytest.mark.parametrize(("args", "message"), USER_ERRORS)
def test_user_errors_are_one_line(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = cli(*args)
    assert status == 1
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


USAGE_ERRORS = [
    (["run"], "Missing option '--config'"),
    (["registry", "lst"], "No such command 'lst'"),
    (
        ["compare", "--ref", "r", "--hyp-a", "a", "--hyp-b", "b", "--resamples", "abc"],
        "Invalid value for '--resamples'",
    ),
    (["score", "--bogus"], "No such option: --bogus"),
    (
        ["compare", "--ref", "r", "--hyp-a", "a", "--hyp-b", "b", "--confidence", "1.5"],
        "Invalid value for '--confidence'",
    ),
    (["serve", "--port", "99999"], "Invalid value for '--port'"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_usage_errors_print_usage_and_exit_2(cli: Cli, args: list[str], message: str) -> None:
    status, _, err = cli(*args)
    assert status == 2
    assert "Usage" in err
    assert message in " ".join(err.replace("│", " ").split())  # the message as typer's box wraps it
    assert "Traceback" not in err


def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only FlywheelErrors are a user's mistake: any other exception propagates with its traceback."""
    import stt_flywheel.scoring.corpus as corpus

    def broken(path: Path) -> dict[str, str]:
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(corpus, "read_transcripts", broken)
    monkeypatch.setattr(
        sys, "argv", ["stt-flywheel", "score", "--ref", str(tmp_path), "--hyp", str(tmp_path)]
    )
    with pytest.raises(ValueError, match="internal invariant"):
        main()


def test_invalid_config_key_is_reported(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("trigger:\n  min_eror_cases: 3\n")
    status, _, err = cli("registry", "list", "--config", str(bad))
    assert status == 1
    assert "trigger.min_eror_cases" in err


def test_ingest_and_list_json(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"paths:\n  root: {tmp_path / 'state'}\ndataset:\n  audio_roots: [{tmp_path / 'audio'}]\n"
    )
    records = tmp_path / "r.jsonl"
    good = {
        "id": "a",
        "audio_uri": str(tmp_path / "audio" / "x.wav"),
        "hypothesis": "hi",
        "corrected_text": "high",
        "timestamp": "2026-11-01T00:00:00Z",
    }
    elsewhere = [{**good, "id": "b", "audio_uri": uri} for uri in ("/x.wav", f"{tmp_path}/audio/../c.yaml")]
    lines = [good, b"{broken", good, *elsewhere]
    records.write_bytes(b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines) + b"\n")
    status, out, err = cli("errors", "ingest", str(records), "--config", str(config), "--json")
    assert status == 0, err
    result = orjson.loads(out)
    assert (result["read"], result["accepted"], result["duplicates"], result["quarantined"]) == (5, 1, 1, 3)
    assert [q["reason"] for q in result["quarantine"]] == ["invalid_json", *["audio_outside_roots"] * 2]
    status, out, _ = cli("registry", "list", "--config", str(config), "--json")
    assert status == 0
    assert orjson.loads(out) == {"versions": [], "aliases": {}, "traffic": {}}


def test_registry_list_json_with_a_serving_version(cli: Cli, tmp_path: Path, base_model_dir: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  root: {tmp_path / 'state'}\n")
    cfg = load_config(config)
    registry = open_registry(cfg)
    version = registry.register(base_model_dir)
    registry.promote(version.version)
    open_endpoint(cfg, registry).deploy(version.version)
    status, out, err = cli("registry", "list", "--config", str(config), "--json")
    assert status == 0, err
    listed = orjson.loads(out)
    assert listed["traffic"] == {"1": 100}
    assert listed["aliases"] == {"default": 1}
    status, out, _ = cli("registry", "list", "--config", str(config))
    assert status == 0
    assert "registry.sqlite" in "".join(out.split())  # the title names where the versions live


def test_compile_writes_yaml(cli: Cli, tmp_path: Path) -> None:
    status, _, err = cli("compile", "--output", str(tmp_path / "p.yaml"))
    assert status == 0, err
    assert "deploy-model" in (tmp_path / "p.yaml").read_text()


REF = "the cat sat on the mat (u1)\nhello world (u2)\nTwenty one tablets (u3)\n"
HYP_A = "the cat sat on mat (u1)\nhello word (u2)\n21 tablets (u3)\n"
HYP_B = '{"id": "u1", "text": "a cat sat on the mat"}\n{"id": "u2", "text": "hello world"}\n{"id": "u3", "text": "twenty one tablet"}\n'


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    paths = tmp_path / "ref.trn", tmp_path / "a.trn", tmp_path / "b.jsonl"
    for path, text in zip(paths, (REF, HYP_A, HYP_B), strict=True):
        path.write_text(text)
    return paths


def test_score_prints_counts(cli: Cli, tmp_path: Path) -> None:
    ref, a, _ = _files(tmp_path)
    status, out, err = cli("score", "--ref", str(ref), "--hyp", str(a), "--json")
    assert status == 0, err
    result = orjson.loads(out)
    # whisper-en/1: "twenty one" == "21"; u1 loses "the", u2 "world" -> "word"
    assert (result["hits"], result["substitutions"], result["deletions"], result["insertions"]) == (
        8,
        1,
        1,
        0,
    )
    assert result["wer"] == 0.2
    assert result["normalizer"] == "whisper-en/1"
    assert result["raw_wer"] > result["wer"]
    _, out, _ = cli("score", "--ref", str(ref), "--hyp", str(a), "--normalizer", "basic-en", "--json")
    basic = orjson.loads(out)
    assert (basic["substitutions"], basic["deletions"], basic["normalizer"]) == (2, 2, "basic-en/1")


def test_compare_reports_interval_and_tests(cli: Cli, tmp_path: Path) -> None:
    ref, a, b = _files(tmp_path)
    status, out, err = cli("compare", "--ref", str(ref), "--hyp-a", str(a), "--hyp-b", str(b), "--json")
    assert status == 0, err
    result = orjson.loads(out)
    assert result["wer_a"] == result["wer_b"] == 0.2
    assert result["delta_wer"] == 0.0
    assert result["interval"]["low"] <= 0.0 <= result["interval"]["high"]
    assert set(result["p_values"]) == {"wilcoxon", "t_test", "mapsswe"}
    assert (result["a_better"], result["a_worse"]) == (1, 1)


def test_compare_privileges_neither_system(cli: Cli, tmp_path: Path) -> None:
    """B far better than A: every test is two-sided, so each p-value is small (a one-sided test of
    "A is better" would say 1.0), and the JSON says so, with each test's statistic and count."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    ref = "".join(f"{' '.join(words)} (u{i})\n" for i in range(40))
    b = ref
    a = "".join(f"{' '.join(words[:5])} xray yankee zulu (u{i})\n" for i in range(40))
    paths = {}
    for name, text in (("ref", ref), ("a", a), ("b", b)):
        paths[name] = tmp_path / f"{name}.trn"
        paths[name].write_text(text)
    args = ["compare", "--ref", str(paths["ref"]), "--hyp-a", str(paths["a"]), "--hyp-b", str(paths["b"])]
    status, out, err = cli(*args, "--json")
    assert status == 0, err
    result = orjson.loads(out)
    for name in ("wilcoxon", "t_test", "mapsswe"):
        test = result["tests"][name]
        assert test["alternative"] == "two-sided"
        assert test["p_value"] < 1e-6, name
        assert test["pairs"] == 40
        assert test["a_worse"] == 40
    assert isinstance(result["newly_broken"], int)
    assert result["newly_broken"] == 40
    status, out, _ = cli(*args)
    assert "two-sided" in out
    assert "mapsswe: p = " in out


def test_score_rejects_mismatched_ids(cli: Cli, tmp_path: Path) -> None:
    ref, _, _ = _files(tmp_path)
    other = tmp_path / "other.trn"
    other.write_text("x (u9)\n")
    status, _, err = cli("score", "--ref", str(ref), "--hyp", str(other))
    assert status == 1
    assert "3 reference ids have no hypothesis" in err
    assert "Traceback" not in err


def _commands(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, object]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(path), command
        return
    for name, sub in subcommands.items():
        yield from _commands(sub, (*path, name))


def test_empty_transcripts_are_refused(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.trn"
    empty.write_text("")
    for args in (
        ["score", "--ref", str(empty), "--hyp", str(empty)],
        ["compare", "--ref", str(empty), "--hyp-a", str(empty), "--hyp-b", str(empty)],
    ):
        status, out, err = cli(*args)
        assert status == 1 and "no transcripts in it" in err and "nan" not in out + err


def test_a_file_with_no_valid_line_is_refused_and_kept_whole(cli: Cli, tmp_path: Path) -> None:
    from stt_flywheel.data.error_store import open_error_store

    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  root: {tmp_path / 'state'}\n")
    trn = tmp_path / "hyp.trn"
    trn.write_text("".join(f"turn the lights on ({i})\n" for i in range(60)))
    status, out, err = cli("errors", "ingest", str(trn), "--config", str(config))
    assert status == 1
    assert "no valid line — all 60 quarantined, 60 as invalid_json (first at line 1)" in err
    assert "… and 40 more" in out and "quarantine/" in out
    stats = open_error_store(load_config(config)).stats()
    assert stats["records_rejected_at_ingest"] == 60  # every rejected line is kept
    status, out, err = cli("feedback", "ingest", str(trn), "--config", str(config), "--json")
    assert status == 1 and orjson.loads(out)["read"] == 60 and "no valid line" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    status, _, err = cli("errors", "ingest", str(empty), "--config", str(config))
    assert status == 1 and "no records in it" in err


def test_ingest_reads_standard_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  root: {tmp_path / 'state'}\ndataset:\n  audio_roots: [/audio]\n")
    event = {
        "id": "a",
        "audio_uri": "/audio/x.wav",
        "hypothesis": "hi",
        "corrected_text": "high",
        "timestamp": "2026-11-01T00:00:00Z",
    }
    out = CliRunner().invoke(
        app,
        ["errors", "ingest", "-", "--config", str(config), "--json"],
        input=orjson.dumps(event).decode() + "\n",
    )
    assert out.exit_code == 0, out.output
    assert orjson.loads(out.stdout)["accepted"] == 1


@pytest.mark.parametrize(
    "args", [["status"], ["registry", "list"], ["monitor"], ["errors", "export"], ["store", "compact"]]
)
def test_commands_that_read_state_need_a_config_or_a_flywheel_here(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = cli(*args)
    assert status == 1 and "no --config given and no ./.flywheel here" in err
    assert not (tmp_path / ".flywheel").exists()


def test_output_into_a_pipe_is_not_wrapped(tmp_path: Path) -> None:
    """The real entry point with stdout and stderr pipes: an error line and a table keep their width."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "flywheel.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "flywheel_pipelines.cli", "status", "--config", str(deep)],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in __import__("os").environ.items() if k != "COLUMNS"},
    )
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert len(line) > 120 and line.endswith("flywheel.yaml")


def test_score_and_compare_print_fractions_as_everything_else_does(cli: Cli, tmp_path: Path) -> None:
    ref, a, b = _files(tmp_path)
    _, out, _ = cli("score", "--ref", str(ref), "--hyp", str(a))
    assert "WER 0.2000" in out and "%" not in out
    _, out, _ = cli("compare", "--ref", str(ref), "--hyp-a", str(a), "--hyp-b", str(b))
    assert "WER A 0.2000" in out and "ΔWER (A − B) " in out


def test_every_commands_help_has_an_example_that_uses_its_real_options(cli: Cli) -> None:
    for name, command in _commands(typer.main.get_command(app)):
        status, out, _ = cli(*name.split(), "--help")
        assert status == 0
        assert "Example:" in out, f"{name} --help has no example"
        assert "<bool>" not in out, f"{name} --help shows a flag as taking a value"
        example = shlex.split(EXAMPLES[name].split("|")[-1].split(">")[0])
        assert example[: 1 + len(name.split())] == ["stt-flywheel", *name.split()]
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}  # type: ignore[attr-defined]
        for word in example:
            if word.startswith("-") and word != "-":
                assert word in known, f"the example of {name} uses {word}, which it does not take"


def test_a_flag_is_shown_without_a_value_type(cli: Cli) -> None:
    _, out, _ = cli("monitor", "--help")
    line = next(line for line in out.splitlines() if "--dry-run" in line)
    assert "<" not in line
    _, out, _ = cli("compare", "--help")
    assert "<float range>" in out  # options with a value keep their type


@pytest.mark.parametrize(
    ("paths", "command", "said"),
    [
        (
            "{root: ROOT/state, error_store: /etc/hostname/store}",
            ["errors", "ingest", "/dev/null"],
            "cannot use /etc/hostname/store: Not a directory",
        ),
        (
            "{root: ROOT/state, registry_db: ROOT}",
            ["registry", "list"],
            "cannot open the registry database ROOT",
        ),
        ("{root: /sys/flywheel}", ["status"], "cannot use /sys/flywheel"),
    ],
    ids=["store-under-a-file", "registry-db-a-directory", "store-in-sys"],
)
def test_a_store_where_none_can_be_is_one_line(
    cli: Cli, tmp_path: Path, paths: str, command: list[str], said: str
) -> None:
    config = tmp_path / "flywheel.yaml"
    config.write_text(f"paths: {paths.replace('ROOT', str(tmp_path))}\n")
    status, _, err = cli(*command, "--config", str(config))
    assert status == 1
    assert said.replace("ROOT", str(tmp_path)) in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
