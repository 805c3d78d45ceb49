"""concept_core: concepts -> next concept. The Base, One-Tower, Two-Tower diffusion and Quantized
LCMs behind one interface (``interface.ConceptModel``). Knows nothing of bytes."""
