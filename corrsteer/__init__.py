"""corrsteer: the CorrSteer pipeline (models, SAEs, tasks, collection, selection, steering, evaluation)."""
__version__ = "0.1.0"
