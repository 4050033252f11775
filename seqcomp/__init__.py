"""seqcomp: sequence compression for a frozen causal LM, valid by construction and easy to inspect."""

__version__ = "0.1.0"
