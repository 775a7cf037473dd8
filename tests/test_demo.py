"""`stt-flywheel demo --bad-canary`, end to end on a half-size world: a degraded model put on canary
by hand serves beside version 1, its users correct it, and the monitor pipeline (kfp.local) rolls
it back from the live evidence alone. (The two training turns of the full demo are `make demo`'s;
their parts are tested in test_local_run, test_monitor and test_stages.)"""

import io
from pathlib import Path

from rich.console import Console

from flywheel_pipelines.demo import run_demo
from stt_flywheel.config import load_config
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.storage.files import read_json


def test_the_bad_canary_is_rolled_back_by_the_monitor(tmp_path: Path) -> None:
    out = io.StringIO()
    summary = run_demo(tmp_path, scale=0.5, bad_canary=True, console=Console(file=out, width=140))
    (turn,) = summary["turns"]
    assert turn["decision"] == "rollback", turn
    rate = next(t for t in turn["monitor"]["tests"] if t["metric"] == "correction_rate")
    assert rate["verdict"] == "worse" and rate["low"] > 0
    # the canary served its half, and it was the worse arm by its users' corrections
    live = turn["live"]
    assert live["v2"]["correction_rate"] > live["v1"]["correction_rate"]
    assert min(live["v1"]["labelled"], live["v2"]["labelled"]) >= 100
    config = load_config(tmp_path / "bad-canary" / "flywheel.yaml")
    assert open_endpoint(config).traffic() == {1: 100}
    assert open_registry(config).aliases() == {"default": 1}
    assert Path(turn["monitor"]["report"]).is_file()
    text = out.getvalue()
    assert "canary v2 rolled back: worse than v1" in text
    assert "bad canary" in text and "rollback" in text
    assert read_json(tmp_path / "bad-canary" / "summary.json")["turns"][0]["decision"] == "rollback"
    # a second run starts the scenario afresh and ends the same way
    again = run_demo(tmp_path, scale=0.5, bad_canary=True, console=Console(file=io.StringIO(), width=140))
    assert again["turns"][0]["decision"] == "rollback"


def test_one_users_swap_of_a_critical_term_is_held_and_never_trains(
    poisoned_demo: tuple[Path, dict, str],
) -> None:
    """`demo --poisoned-feedback` on the tests' small world, with a short training: the
    attacker's corrections that take "lock" away are all held for review, none of them is in the
    dataset, the curated eval set measures the critical term for production, and the run ends
    with a decision whichever way the gates go."""
    from stt_flywheel.data.dataset import load_split
    from stt_flywheel.data.error_store import open_error_store
    from stt_flywheel.demo.poison import ATTACKER
    from stt_flywheel.run.entries import DatasetEntry
    from stt_flywheel.run.ledger import read_ledger

    home, summary, text = poisoned_demo
    attack, held = summary["attack"], summary["held"]
    assert attack["heard_lock"] > 0
    assert held["critical_term_replaced"] >= attack["heard_lock"]
    (turn,) = summary["turns"]
    config = load_config(home / "poisoned-feedback" / "flywheel.yaml")
    dataset = read_ledger(config, turn["run_id"], DatasetEntry)
    assert dataset is not None and dataset.quarantine_reasons["held_for_review"] >= attack["heard_lock"]
    mallory = open_error_store(config).senders.pseudonym(ATTACKER)
    for split in ("train", "heldout"):
        assert all(row["user"] != mallory for row in load_split(dataset.published_to, split))
    assert summary["outcome"]["curated_critical_recall"]["production"] is not None
    assert turn["decision"]
    assert f"{ATTACKER} asked for {attack['clips']} transcripts" in text and "Held for review" in text
