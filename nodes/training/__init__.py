"""Training as nodes (issue 23): datasets, and TrainLoRA, whose LoRA the workflow uses at once."""
