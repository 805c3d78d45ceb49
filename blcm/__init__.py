"""blcm: the byte-lcm system. Wires blt/, concept_core/ and bridges/; trains with Lightning; the `blcm` CLI.
The layout map is README.md's *The layout*."""
