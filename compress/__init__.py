"""dcclip-compress: distil a bilingual (zh + en) CLIP into small int8 students that run on phones."""
import logging as _logging

# torchao registers its enums with torch's pytree at import and torch logs a deprecation line for each; it is noise
# on every command's stderr (and would break the one-line error contract), so keep it quiet.
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
