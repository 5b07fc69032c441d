"""Choosing the torch device a model runs on."""

from __future__ import annotations

import torch

from ..i18n import _
from ..errors import ExplorerError

def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a ``torch.device``.

    ``"auto"`` prefers CUDA when present. Asking for CUDA where there is none is an error, not a silent
    fall-back, so that "the same numbers on GPU and CPU" is never checked against the CPU twice.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not cuda_available():
            raise ExplorerError(
                _("CUDA was asked for, but this machine has no CUDA GPU visible to PyTorch. Choose the CPU instead.")
            )
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ExplorerError(_("'{device}' is not a valid CUDA device name.").format(device=device)) from exc
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ExplorerError(
                _("There is no GPU {index}: this machine has {count}.").format(
                    index=dev.index, count=torch.cuda.device_count()
                )
            )
        return dev
    raise ExplorerError(_("Unknown device '{device}'. Use one of: auto, cpu, cuda.").format(device=device))


def tf32_enabled() -> bool:
    """Do float32 matmuls on CUDA run in TF32 (10-bit mantissa)? Then results differ from the float32 reference by
    ~1e-3 relative, and the 1e-5 parity this project checks does not hold: show a notice.

    Set by ``torch.backends.cuda.matmul.allow_tf32`` or ``torch.set_float32_matmul_precision("high"|"medium")``.
    ``torch.backends.cudnn.allow_tf32`` (on by default) is not counted: it affects cuDNN convolutions, which these
    models do not run.
    """
    return bool(torch.backends.cuda.matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"
