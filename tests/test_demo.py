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
