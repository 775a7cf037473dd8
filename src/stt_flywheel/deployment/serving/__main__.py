"""`python -m stt_flywheel.deployment.serving`: the server, configured by its environment (what
`ServingProcess` and the serving image start). A setting or a model it refuses ends the process
with its reason on stderr and exit status 2, not a traceback."""

import sys

from stt_flywheel.deployment.serving.app import run_server
from stt_flywheel.deployment.serving.contract import ServingSettings
from stt_flywheel.errors import FlywheelError
from stt_flywheel.storage.files import private_files

private_files()  # captured audio and transcripts, spill batches: readable by this user alone
try:
    run_server(ServingSettings.from_env())
except FlywheelError as exc:
    print(f"stt-flywheel serving: {exc}", file=sys.stderr)
    sys.exit(2)
