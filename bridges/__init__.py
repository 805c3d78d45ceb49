"""bridges: where bytes meet concepts (segmenters, concept codecs), and where other concept spaces plug in.
The layout map is README.md's *The layout*."""
