"""Threading environment for the CPU pipeline, applied before torch loads.

On 2 cores, torch's OpenMP workers spin-wait between parallel regions by default and
take the cores from the decode and encode threads: `nvpipe run` on 1080p at ratio 0.25
measured 6.2 fps spinning, 7.0 fps with OMP_WAIT_POLICY=PASSIVE (same run, this machine).
"""

import os
import sys


def tune_for_pipeline() -> None:
    """Sets OMP_WAIT_POLICY=PASSIVE unless the user set it or torch is already loaded
    (OpenMP reads it once, when the runtime starts)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
