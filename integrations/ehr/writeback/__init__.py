"""Write-back webhooks: the portal tells the EHR side what happened to a charge (signed, retried)."""
