"""primitives: the pieces both towers build on (attention and its masks, the transformer block and KV cache,
sampling, atomic writes, exports). Imports torch and einops, never blt, concept_core, bridges or blcm; the
layout map is README.md's *The layout*."""
