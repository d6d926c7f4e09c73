"""Training: recipes, losses, GradCache steps, the two-stage trainer on accelerate (DDP, FSDP, DeepSpeed)."""

from .._lazy import lazy_exports

_EXPORTS = {
    "LaMELoss": "objective", "LossWeights": "objective", "loss_weights": "objective",
    "Recipe": "recipe", "RecipeError": "recipe", "load_recipe": "recipe",
    "TrainBatch": "steps", "compute_gradients": "steps",
    "Trainer": "trainer", "TrainingDiverged": "trainer", "dry_run": "trainer", "train": "trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
