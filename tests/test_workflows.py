"""The ready-made flow builder."""

import sys

from conftest import ROOT, small_config_dict


def test_build_flow_from_config(write_config):
    sys.path.insert(0, str(ROOT / "workflows"))
    from disordered_campaign import build

    flow = build(str(write_config(small_config_dict())), name="wf")
    assert [j.name for j in flow.jobs] == [
        "register wf",
        "enumerate wf",
        "prescreen wf",
        "initial design wf",
    ]
