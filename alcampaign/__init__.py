"""alcampaign: database-centric active-learning campaigns for materials.

The layers show in the folders; each may import only the ones listed before it
(``tests/test_layers.py`` checks this with import-linter):

``science``
    surrogate, acquisition, hull, validation, stopping, domain, features, one
    controller step on arrays (``learning.decide``): numpy/scipy, no I/O.
``config``
    the campaign config (pydantic) and store specifications.
``structures``, ``chgnet``, ``md``
    enumeration and structure reading; the CHGNet prescreen; MD dynamics and the
    linear potential.
``store``
    the one facade over the campaign collections and read-only views.
``campaign``
    stored documents, jobs, the controller, flows (``ActiveLearningMaker``),
    preflight, the external oracle, managers.
``report``, ``serve``
    plots and HTML; the HTTP API and dashboard.
``cli``
    parses, calls and prints.
"""

__version__ = "0.1.0"
