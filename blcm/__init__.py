"""blcm: the byte-lcm system. Wires blt/, concept_core/ and bridges/; trains with Lightning; the `blcm` CLI."""
