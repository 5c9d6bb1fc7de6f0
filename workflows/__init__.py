"""Ready-made campaign flows (thin wrappers over :mod:`alcampaign.campaign.flows`)."""
