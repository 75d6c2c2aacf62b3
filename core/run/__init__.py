"""What a run executes, and nothing else: config, knowledge, examples, models, LoRA, training, generation,
scoring, metrics, the stored record and the one recipe. Its content hash is the code version (version.py)."""
