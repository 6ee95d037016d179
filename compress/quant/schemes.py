"""Quantization schemes: one registry of config objects, one set of verbs (torchao style).

A scheme takes an eager fp32 tower through `prepare` -> (QAT steps, or calibration batches) -> `convert`, and the
result goes to `get_target(name).lower` (mobile_export.lower.targets) like any module. Which scheme a run trains is
the recipe's `qat.scheme` (plus `qat.compare` for the report's side-by-side); `dcclip-compress export --quant` takes
the same names.

- `int8`: static int8 for conv + linear (per-channel weights, per-tensor activations), PT2E XNNPACK quantizer,
  QAT through `prepare_qat_pt2e` (compress/train/qat.py).
- `ptq-int8`: the same quantizer and graph, calibrated only (`prepare_pt2e` observers, no training): the baseline.
  The recipe's `qat.ptq_*` keys choose its calibration (batches, activation observer, per-channel linears).
- `ft-ptq-int8`: QAT's training without fake-quant, then `ptq-int8`: the eager fp32 towers are fine-tuned with QAT's
  loop, losses, seed and batch order (compress/pipeline/quantize.py), then calibrated and converted like `ptq-int8`.
  The baseline at equal training: what QAT gains over it is what the fake-quant bought, not the extra epochs.
- `8da8w` / `8da4w`: torchao eager QAT, `QATConfig(Int8DynamicActivationIntxWeightConfig)` on every `nn.Linear`
  (dynamic per-token int8 activations, int8 per-channel / int4 group-32 weights) and `IntxWeightOnlyConfig` int8
  per-row on `nn.Embedding` (the text table). torchao's QAT covers Linear and Embedding only: convolutions stay
  fp32 (for MobileViT that is most of the image tower; a ViT is all linear but its patch embedding).
- `fp32`: no quantization.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from compress.errors import UserError, did_you_mean

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads the scheme names without loading it
    import torch
    from torch import nn

GROUP_SIZE = 32  # 8da4w weight groups along in_features; layers whose in_features it does not divide use per-channel


@dataclass(frozen=True)
class PTQSettings:
    """How a post-training scheme calibrates: the recipe's qat.ptq_calibration_batches / ptq_observer /
    ptq_per_channel. The defaults are what ptq-int8 always did (compress/quant/calibrate.py BATCHES, the XNNPACK
    config's histogram observer, per-channel linears in the text tower only)."""

    batches: int = 4  # x 64 training rows (calibrate.SIZE)
    observer: str = "histogram"  # static activations: histogram | minmax (compress/quant/pt2e.py OBSERVERS)
    per_channel: bool | None = None  # linear weights; None: per tower (pt2e's linear_per_channel)

    @property
    def is_default(self) -> bool:
        return self == PTQSettings()

    def as_dict(self) -> dict[str, Any]:
        return {"calibration_batches": self.batches, "rows_per_batch": 64, "activation_observer": self.observer,
                "linear_per_channel": "per tower (text yes, image no)" if self.per_channel is None else self.per_channel}


def ptq_settings(qat: Any) -> PTQSettings:
    """The PTQ settings of a recipe's `qat` section (QATConfig)."""
    return PTQSettings(qat.ptq_calibration_batches, qat.ptq_observer, qat.ptq_per_channel)


def train_keeping_batchnorm(module: nn.Module, flag: bool) -> nn.Module:
    """Train mode for dropout, with BatchNorm kept at its running statistics (as the PT2E flow folds it): a
    short fine-tune must not re-estimate them from a few batches."""
    from torch import nn

    module.train(flag)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return module


@dataclass(frozen=True)
class Scheme:
    """A named way to turn an fp32 tower into a quantized one. Subclasses implement the verbs."""

    name: str
    summary: str
    trains: bool  # True: QAT (fake-quant fine-tuning); False: calibration batches or nothing
    calibrates: bool = False  # True: run a few batches through the prepared model before convert
    calibrated_by: str | None = None  # the post-training scheme whose activation ranges `qat.calibrate` starts from
    # the post-training scheme that quantizes the eager fp32 towers after QAT's fine-tune without fake-quant
    then: str | None = None
    ptq: PTQSettings = PTQSettings()  # calibration settings of the post-training schemes (with_ptq)

    def with_ptq(self, settings: PTQSettings) -> "Scheme":
        """This scheme calibrating with `settings` (the recipe's qat.ptq_*); schemes that never calibrate
        statically are returned unchanged."""
        return self

    def prepare(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        return module

    def set_train(self, module: nn.Module, flag: bool) -> nn.Module:
        return module.train(flag)

    def convert(self, module: nn.Module) -> nn.Module:
        return module

    def seed_activation_ranges(self, module: nn.Module, calibrated: nn.Module) -> int:
        """Copy the static activation ranges of `calibrated` (this tower through `calibrated_by`) into the prepared
        QAT `module` and freeze them (QAT from post-training ranges); how many it froze. Schemes with dynamic or no
        activation quantization have none."""
        return 0

    def config(self) -> dict[str, Any]:
        return {"scheme": self.name, "summary": self.summary}

    @property
    def quantized(self) -> bool:
        return True


@dataclass(frozen=True)
class Fp32(Scheme):
    @property
    def quantized(self) -> bool:
        return False

    def config(self) -> dict[str, Any]:
        return {"scheme": self.name, "summary": self.summary, "flow": "none"}


@dataclass(frozen=True)
class PT2EInt8(Scheme):
    """Static int8 through torchao PT2E and ExecuTorch's XNNPACK quantizer (QAT or calibration only)."""

    def prepare(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        from compress.quant import pt2e as qat

        if self.trains:
            return qat.prepare_qat(module, example_inputs)
        return qat.prepare_ptq(module, example_inputs, self.ptq.observer, self.ptq.per_channel)

    def set_train(self, module: nn.Module, flag: bool) -> nn.Module:
        from compress.quant import pt2e as qat

        return qat.set_train(module, flag and self.trains)  # a calibrated graph stays in eval (observers still see)

    def convert(self, module: nn.Module) -> nn.Module:
        from compress.quant import pt2e as qat

        return qat.convert_qat(module)

    def seed_activation_ranges(self, module: nn.Module, calibrated: nn.Module) -> int:
        from compress.quant import pt2e as qat

        return qat.seed_activation_ranges(module, calibrated) if self.trains else 0

    def with_ptq(self, settings: PTQSettings) -> Scheme:
        return self if self.trains else dataclasses.replace(self, ptq=settings)

    def config(self) -> dict[str, Any]:
        from compress.quant import pt2e as qat

        ptq = {} if self.trains or self.ptq.is_default else {"calibration": self.ptq.as_dict()}
        return {"scheme": self.name, "summary": self.summary, **ptq,
                **qat.describe_qat_config(self.trains, self.ptq.observer, self.ptq.per_channel)}


@dataclass(frozen=True)
class FineTuneThenPTQ(Scheme):
    """fp32 fine-tuning with QAT's loop (compress/pipeline/quantize.py runs it on eager towers), then the
    post-training scheme `then`. The verbs are `then`'s: where no run trains (`export --quant` without the run's
    `.pte`, `quantize_tower`) it quantizes post-training and is exactly `then`, as `8da8w` there is QAT's verbs
    without the QAT steps."""

    def post(self) -> Scheme:
        """The post-training scheme that quantizes the fine-tuned towers, with this scheme's PTQ settings."""
        assert self.then is not None
        return get_scheme(self.then).with_ptq(self.ptq)

    def prepare(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        return self.post().prepare(module, example_inputs)

    def set_train(self, module: nn.Module, flag: bool) -> nn.Module:
        return self.post().set_train(module, flag)

    def convert(self, module: nn.Module) -> nn.Module:
        return self.post().convert(module)

    def with_ptq(self, settings: PTQSettings) -> Scheme:
        return dataclasses.replace(self, ptq=settings)

    def config(self) -> dict[str, Any]:
        return {"scheme": self.name, "summary": self.summary,
                "flow": "eager fp32 fine-tune with QAT's loop, losses, seed and batch order (BatchNorm at its running "
                        f"statistics, no fake-quant) -> {self.then}",
                "post_training": self.post().config()}


@dataclass(frozen=True)
class TorchaoDynamic(Scheme):
    """torchao eager QAT: `quantize_(m, QATConfig(base, step="prepare"))` -> train -> `step="convert"`."""

    weight_bits: int = 8

    def set_train(self, module: nn.Module, flag: bool) -> nn.Module:
        return train_keeping_batchnorm(module, flag)

    def linear_configs(self, module: nn.Module) -> list[tuple[Any, Callable[[nn.Module, str], bool]]]:
        """(base config, filter) pairs for the linears. int4 weights go in groups of GROUP_SIZE: XNNPACK's 4-bit
        kernels take group sizes that are multiples of 32 only, so a linear whose in_features GROUP_SIZE does not
        divide (MobileViT-XXS has 80 and 240) keeps int8 per-channel weights instead of falling out of the delegate."""
        import torch
        from torch import nn
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig
        from torchao.quantization.granularity import PerAxis, PerGroup

        int8 = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
        linear = lambda m, _: isinstance(m, nn.Linear)
        if self.weight_bits == 8:
            return [(int8, linear)]
        int4 = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP_SIZE))
        grouped = lambda m, fqn: linear(m, fqn) and m.in_features % GROUP_SIZE == 0
        return [(int4, grouped), (int8, lambda m, fqn: linear(m, fqn) and not grouped(m, fqn))]

    @staticmethod
    def embedding_config():
        import torch
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerAxis

        return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))

    def _configs(self, module: nn.Module) -> list[tuple[Any, Callable[[nn.Module, str], bool]]]:
        from torch import nn

        embedding = lambda m, _: isinstance(m, nn.Embedding)
        return self.linear_configs(module) + [(self.embedding_config(), embedding)]

    def prepare(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        from torchao.quantization import quantize_
        from torchao.quantization.qat import QATConfig

        for base, keep in self._configs(module):
            quantize_(module, QATConfig(base, step="prepare"), filter_fn=keep)
        return module

    def convert(self, module: nn.Module) -> nn.Module:
        """`QATConfig(step="convert")` per base config, on the fake-quantized modules its filter prepared (they
        subclass nn.Linear / nn.Embedding, so the same filters still pick them)."""
        from torchao.quantization import quantize_
        from torchao.quantization.qat import QATConfig
        from torchao.quantization.qat.embedding import FakeQuantizedEmbedding
        from torchao.quantization.qat.linear import FakeQuantizedLinear

        module.eval()
        for base, keep in self._configs(module):
            fake = lambda m, fqn, keep=keep: isinstance(m, (FakeQuantizedLinear, FakeQuantizedEmbedding)) and keep(m, fqn)
            quantize_(module, QATConfig(base, step="convert"), filter_fn=fake)
        return module

    def config(self) -> dict[str, Any]:
        import executorch.version
        import torchao
        from torchao.core.config import config_to_dict
        from torchao.quantization.granularity import PerAxis, PerGroup

        import torch
        from torch import nn

        def entry(base, applies_to: str) -> dict[str, Any]:
            return {"applies_to": applies_to, "config": config_to_dict(base)}

        probe = nn.Sequential(nn.Linear(GROUP_SIZE, 2), nn.Linear(GROUP_SIZE + 1, 2))  # both linear configs
        linear = [b for b, _ in self.linear_configs(probe)]
        rows = [entry(b, "nn.Linear" + ("" if self.weight_bits == 8 else
                                        (f" (in_features % {GROUP_SIZE} == 0)"
                                         if isinstance(b.weight_granularity, PerGroup) else
                                         f" (in_features % {GROUP_SIZE} != 0: int8 per-channel, XNNPACK's int4 "
                                         "groups must be multiples of 32)")))
                for b in linear]
        rows.append(entry(self.embedding_config(), "nn.Embedding"))
        assert all(isinstance(b.weight_granularity, (PerAxis, PerGroup)) for b in linear)
        return {
            "scheme": self.name, "summary": self.summary,
            "flow": "torchao.quantization.quantize_(QATConfig(base_config, step='prepare')) -> train -> "
                    "quantize_(QATConfig(base_config, step='convert'))",
            "configs": rows,
            "not_quantized": "nn.Conv2d (torchao QAT covers nn.Linear and nn.Embedding only), LayerNorm, attention",
            "versions": {"torch": torch.__version__, "torchao": torchao.__version__,
                         "executorch": executorch.version.__version__},
        }


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    PT2EInt8("int8", "static int8 conv+linear (per-channel weights, per-tensor activations), PT2E QAT", trains=True,
             calibrated_by="ptq-int8"),
    PT2EInt8("ptq-int8", "the int8 graph calibrated only (PT2E prepare_pt2e observers, no training)",
             trains=False, calibrates=True),
    FineTuneThenPTQ("ft-ptq-int8", "fp32 fine-tuned like QAT (same loop, losses, epochs; no fake-quant), then ptq-int8",
                    trains=False, calibrates=True, then="ptq-int8"),
    TorchaoDynamic("8da8w", "torchao QAT: dynamic int8 activations, int8 per-channel linear weights, int8 embedding",
                   trains=True, weight_bits=8),
    TorchaoDynamic("8da4w", f"torchao QAT: dynamic int8 activations, int4 linear weights (groups of {GROUP_SIZE}; int8 "
                            "per-channel where in_features is no multiple of 32), int8 embedding", trains=True, weight_bits=4),
    Fp32("fp32", "no quantization", trains=False),
)}


def scheme_names() -> list[str]:
    return list(SCHEMES)


def check_scheme_name(name: str, what: str = "quantization scheme") -> str:
    """The name if registered; else a ValueError with a did-you-mean (recipes turn it into one line)."""
    if name not in SCHEMES:
        raise ValueError(f"{name!r} is not a known {what}; {did_you_mean(name, SCHEMES, cutoff=0.5)}")
    return name


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[check_scheme_name(name)]
    except ValueError as err:
        raise UserError(str(err)) from None


def quantize_tower(scheme: Scheme, module: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                   calibration: Iterable[tuple[torch.Tensor, ...]] = ()) -> nn.Module:
    """prepare -> calibration batches (no training) -> convert, on a copy of `module`: the post-training path."""
    from compress.quant.calibrate import observe

    prepared = scheme.prepare(copy.deepcopy(module).eval(), example_inputs)
    scheme.set_train(prepared, False)
    observe(prepared, calibration)
    return scheme.convert(prepared)
