"""Ground-truth-factor datasets."""
