"""The text student through every post-training and QAT scheme but fp32/int8 (those are in test_qat_export.py): it
exports, runs in the ExecuTorch runtime and matches its converted eager model. Split from test_quant_schemes.py so the
two halves run in parallel xdist workers."""
from __future__ import annotations

import pytest

from tests import test_quant_schemes as schemes

lowered = schemes.lowered  # the module-scoped fixture, built anew for this file

CASES = [("text", s) for s in ("ptq-int8", "8da8w", "8da4w")]


@pytest.mark.parametrize("tower,name", CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_scheme_exports_and_runs(lowered, tower, name):
    schemes.check_scheme(lowered, tower, name)
