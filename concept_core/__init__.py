"""concept_core: concepts -> next concept. The Base, One-Tower, Two-Tower diffusion, Energy and Quantized
LCMs behind one interface (``interface.ConceptModel``). Knows nothing of bytes; the layout map is README.md's
*The layout*."""
