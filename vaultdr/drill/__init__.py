"""`vaultdr drill`: Gherkin DR scenarios against a fresh stack, and the evidence they leave."""
