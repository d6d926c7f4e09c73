from .objective import LaMELoss, LossWeights, loss_weights
from .recipe import Recipe, RecipeError, load_recipe
from .steps import TrainBatch, compute_gradients
from .trainer import Trainer, TrainingDiverged, dry_run, train

__all__ = ["LaMELoss", "LossWeights", "Recipe", "RecipeError", "TrainBatch", "Trainer", "TrainingDiverged",
           "compute_gradients", "dry_run", "load_recipe", "loss_weights", "train"]
