"""Everything that talks to central."""
