"""SAM2 / SAM2.1 / MedSAM2 in the official key layout (see :mod:`.config` for the sizes)."""
