"""The pages of each audience, one module per audience (templates in the folder of the same name)."""
