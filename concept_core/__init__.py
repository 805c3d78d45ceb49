"""concept_core: concepts -> next concept (Base, One-Tower, Two-Tower diffusion, Quantized LCMs). Knows nothing of bytes."""
