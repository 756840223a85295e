"""nn.Modules with quantizers, drop-in replacements for fairseq's."""
