"""The API's views of the stored documents (one per collection), shared by every route.

The stored documents' models (:mod:`alcampaign.campaign.documents`) with every field
optional (the API serves projections), so the OpenAPI schema describes them.
"""

from __future__ import annotations

from alcampaign.campaign import documents
from alcampaign.campaign.documents import api_view

CandidateDoc = api_view(
    "CandidateDoc", documents.Candidate, documents.Frame, doc="A candidate structure or MD frame."
)
LabelDoc = api_view("LabelDoc", documents.Label, doc="An oracle answer.")
ModelDoc = api_view(
    "ModelDoc", documents.SurrogateModel, documents.PotentialModel, doc="A model version."
)
CampaignDoc = api_view("CampaignDoc", documents.Campaign, doc="A campaign.")
