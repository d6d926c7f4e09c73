from .recipe import Recipe, RecipeError, load_recipe
from .steps import LossWeights, TrainBatch, compute_gradients
from .trainer import Trainer, TrainingDiverged, dry_run, train

__all__ = ["LossWeights", "Recipe", "RecipeError", "TrainBatch", "Trainer", "TrainingDiverged", "compute_gradients",
           "dry_run", "load_recipe", "train"]
