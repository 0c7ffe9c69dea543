"""MedSpikeFormer networks: ``layers`` (neurons), ``blocks`` (AND-SA, MLP, decoder, heads), ``nets``."""
