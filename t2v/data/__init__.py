"""Data: the procedural talking heads, the record format and the online input pipeline."""
