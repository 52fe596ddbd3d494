"""A toy strategy and a toy attack, each added in one file: proof that the registries make extensions local."""
