"""Reading, splitting and storing images, and feeding them to a model in batches."""
