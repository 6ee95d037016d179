"""Quantization schemes (registry + verbs) shared by runs and `dcclip-compress export --quant`."""
