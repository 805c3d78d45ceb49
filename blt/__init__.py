"""blt: bytes <-> patches (BLT-style). Knows nothing of concepts; the layout map is README.md's *The layout*."""
