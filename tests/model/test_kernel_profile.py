"""The per-kernel profile's command line without a GPU (CI): one message and exit code 2, never a traceback."""

from __future__ import annotations

import pytest
import torch

from sala_report.model import kernel_profile


def test_without_a_gpu_it_says_so(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the profile would run")
    assert kernel_profile.main(["--formats", "int4"]) == 2
    assert capsys.readouterr().err == "error: the kernel profile needs a CUDA GPU (none is visible)\n"


def test_an_unknown_format_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        kernel_profile.main(["--formats", "int4,int3"])
    assert e.value.code == 2 and "--formats takes bf16, int8, int4 and fp8, got int3" in capsys.readouterr().err


def test_a_context_that_is_no_token_count_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        kernel_profile.main(["--decode", "256K,lots"])
    assert e.value.code == 2 and "token counts such as 256K,1M, got '256K,lots'" in capsys.readouterr().err
