"""Run an ``alcampaign`` command and kill -9 the process at a named point.

Used by ``test_faults.py``: ``python fault_driver.py POINT N -- CLI ARGS...`` patches
the function named by POINT so that its N-th call ends the process with SIGKILL (no
cleanup, no flush: what a power cut or the OOM killer does), then runs the CLI.
POINT ``none`` runs the command untouched.
"""

from __future__ import annotations

import functools
import os
import signal
import sys


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(owner, attr: str, nth: int, after: bool) -> None:
    """Kill on the ``nth`` call of ``owner.attr``, before or after it runs."""
    original = getattr(owner, attr)
    calls = {"n": 0}

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and not after:
            _kill()
        result = original(*args, **kwargs)
        if calls["n"] == nth and after:
            _kill()
        return result

    setattr(owner, attr, wrapper)


def arm(point: str, nth: int) -> None:
    from ase.calculators.emt import EMT

    from alcampaign.campaign import ingest
    from alcampaign.science import learning
    from alcampaign.store.facade import CampaignStores

    points = {
        # the controller recorded its decision and questions (1st call: initial design)
        "after_acquisitions": (CampaignStores, "record_acquisitions", True),
        # the launch job is mirroring the questions onto the candidates
        "during_launch": (CampaignStores, "mirror_acquisitions", False),
        # an EMT energy evaluation inside a running oracle relaxation
        "during_oracle": (EMT, "calculate", False),
        # every oracle job of a batch finished; the ingest job has stored nothing yet
        "before_ingest": (ingest, "label_for", False),
        # labels stored, candidates not yet moved on, counts not updated
        "after_label": (CampaignStores, "add_labels", True),
        # the controller is fitting the surrogate
        "during_model_update": (learning, "fit_and_validate", False),
        # the controller is judging the stopping rules
        "during_stop_decision": (learning, "judge", False),
    }
    owner, attr, after = points[point]
    _arm(owner, attr, nth, after)


def main() -> None:
    point, nth, sep, *cli = sys.argv[1:]
    assert sep == "--"
    if point != "none":
        arm(point, int(nth))
    from alcampaign.cli import app

    app(cli, prog_name="alcampaign")


if __name__ == "__main__":
    main()
