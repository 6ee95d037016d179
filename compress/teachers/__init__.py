"""Teachers: one interface (`Teacher`), two kinds (Hugging Face CLIP family, the reference teacher)."""
from compress.teachers.base import ImageFeatures, Teacher, TextFeatures

__all__ = ["ImageFeatures", "Teacher", "TextFeatures"]
