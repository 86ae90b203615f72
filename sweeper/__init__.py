"""sweeper: hyperparameter sweeps over hosted LLM fine-tuning APIs, driven by Optuna."""

__version__ = "0.1.0"
