"""dcclip-compress: distil a bilingual (zh + en) CLIP into small int8 students that run on phones."""
import logging as _logging

# torchao registers its enums with torch's pytree at import and torch logs a deprecation line for each; it is noise
# on every command's stderr (and would break the one-line error contract), so keep it quiet.
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)


def load(ref=None, quant=None):
    """A run folder, a checkpoint folder or an export bundle, ready to use: `.classify(images, labels)`,
    `.encode_image(images)`, `.encode_text(texts)`, `.preprocess(images)` (compress/pipeline/api.py). None: the newest
    finished run."""
    from compress.pipeline.api import load as _load

    return _load(ref, quant)
