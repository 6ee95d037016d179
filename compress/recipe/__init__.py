"""Recipes: `from compress.recipe import Recipe, load_recipe`.

The face only re-exports: the schema (pydantic models, fingerprint, the name checks) is schema.py, reading files and
`--set` overrides is load.py. Modules inside compress/recipe/ import those two directly, never this face.
"""
from compress.recipe.load import MAX_RECIPE_BYTES, apply_overrides, load_recipe, parse_recipe
from compress.recipe.schema import (
    ARCH_KEYWORDS,
    SEARCH_DEVICES,
    TRAINING_VERSION,
    AlignConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    ExportConfig,
    ImageStudentConfig,
    QATConfig,
    Recipe,
    SearchBudget,
    SearchConfig,
    SearchImageSpace,
    SearchProxy,
    SearchSpace,
    SearchTextSpace,
    SearchTrials,
    StageConfig,
    StudentsConfig,
    TeacherConfig,
    TextStudentConfig,
    TrainingConfig,
    target_names,
)

__all__ = [
    "ARCH_KEYWORDS", "MAX_RECIPE_BYTES", "SEARCH_DEVICES", "TRAINING_VERSION",
    "AlignConfig", "DataConfig", "DistillConfig", "EvalConfig", "ExportConfig", "ImageStudentConfig", "QATConfig",
    "Recipe", "SearchBudget", "SearchConfig", "SearchImageSpace", "SearchProxy", "SearchSpace", "SearchTextSpace",
    "SearchTrials", "StageConfig", "StudentsConfig", "TeacherConfig", "TextStudentConfig", "TrainingConfig",
    "apply_overrides", "load_recipe", "parse_recipe", "target_names",
]
