"""The `hiahia` command: a user's facts file, the recipe trained on it, the adapter folder and its model card."""
