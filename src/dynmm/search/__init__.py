"""Architecture search over fusion networks."""
