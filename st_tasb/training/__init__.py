"""Training: the dataset rows, the topic-aware balanced sampler, the collator, the losses, the student, the trainer."""
