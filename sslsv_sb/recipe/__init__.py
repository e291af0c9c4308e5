"""Recipe plumbing shared by the recipe scripts (hyper-parameter loading, ...)."""
