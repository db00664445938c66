"""FD-Edge runtime.

onnxruntime (1.32 on Linux) otherwise writes a device id and an event database under
~/.cache/Microsoft and tries to reach Microsoft's telemetry host on first use; an appliance
on a factory network must do neither. The variable only works if set before onnxruntime
initialises, so it is set here, before any edge module can import it.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
