"""`python -m stt_flywheel.deployment.serving`: the server, configured by its environment (what
`ServingProcess` and the serving image start)."""

from stt_flywheel.deployment.serving.app import run_server
from stt_flywheel.deployment.serving.contract import ServingSettings

run_server(ServingSettings.from_env())
