"""After training: the Hugging Face Hub upload and the plots of a run."""
