"""LoRA written for this study: the wrapped Linear (maths) and the injector (module paths), kept apart.

The injector's strict mode is the fix for the original project's silent failure (targets that
match nothing); strict=False reproduces that failure on purpose.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class LoRALinear(nn.Module):
    """y = base(x) + scaling * B(A(dropout(x))); A kaiming-uniform, B zero, so it starts as a no-op.

    A and B are fp32 whatever the base weight's dtype: they are what the optimizer updates, and small
    updates to bf16 weights round away (see models.Precision).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        self.base = base
        self.r = r
        self.alpha = alpha
        self.use_rslora = use_rslora
        self.dropout_p = dropout
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=torch.float32, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=torch.float32, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:  # some model code reads .weight of its projections (dtype checks)
        return self.base.weight

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        lora = (self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        return out + lora.to(out.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        # keep the original tensor: subtracting the delta again would not restore it bit for bit
        if not self.merged:
            self._unmerged_weight = self.base.weight.data
            self.base.weight.data = self._unmerged_weight + self.delta().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.data = self._unmerged_weight
            del self._unmerged_weight
            self.merged = False


@dataclass
class InjectionReport:
    targets: list[str]
    matched: list[str] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    r: int = 0
    alpha: float = 0.0
    use_rslora: bool = False
    warning: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class InjectionError(ValueError):
    """Strict injection matched no module."""


def _matcher(targets):
    """A list of name suffixes, or a single regex (anything with regex metacharacters) matched in full."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    if len(targets) == 1 and any(c in targets[0] for c in "*[]()|\\^$+?"):
        pattern = re.compile(targets[0])
        return targets, lambda name: pattern.fullmatch(name) is not None
    return targets, lambda name: any(name == t or name.endswith("." + t) for t in targets)


def linear_paths(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def inject_lora(model: nn.Module, targets, r: int = 16, alpha: float = 32.0, dropout: float = 0.0,
                use_rslora: bool = False, strict: bool = True) -> InjectionReport:
    """Wrap every nn.Linear whose path matches `targets` and freeze everything that is not LoRA.

    targets: a list of name suffixes ("q_proj"), or one regex matched against the whole module path
    ("transformer\\.h\\.\\d+\\.attn\\.c_attn"; re.fullmatch, so it is not a glob and not a substring search).
    """
    targets, match = _matcher(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    hits = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and match(n)]
    report = InjectionReport(targets=targets, r=r, alpha=alpha, use_rslora=use_rslora)
    if not hits:
        examples = linear_paths(model)[:4]
        asked = ", ".join(f"'{t}'" for t in targets)
        msg = (f"no module matches {asked}; this model's linear layers look like "
               f"{', '.join(repr(e) for e in examples)}")
        if strict:
            raise InjectionError(msg)
        log.warning("LoRA injected nowhere (strict=False): %s", msg)
        report.warning = msg
    for name in hits:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout, use_rslora))
    report.matched = hits
    report.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.total_params = sum(p.numel() for p in model.parameters())
    return report


def enable_full_finetune(model: nn.Module) -> InjectionReport:
    """Reference arm: every weight trains (no LoRA)."""
    for p in model.parameters():
        p.requires_grad_(True)
    n = sum(p.numel() for p in model.parameters())
    return InjectionReport(targets=["<all weights>"], matched=["<all>"], trainable_params=n, total_params=n)


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_all(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.merge()


def unmerge_all(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.unmerge()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights that training changes (LoRA A/B, or all weights in full fine-tuning), detached copies."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def scaled_update(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], scale: float
                  ) -> dict[str, torch.Tensor]:
    """Weight-space interpolation (WiSE-FT, Wortsman et al. 2022): the weights before training plus `scale` times
    the update. A LoRA pair's update B @ A scales through B alone (A is kept, B is 0 before training), so the
    adapter adds exactly scale x its update; any other trainable weight is before + scale x (after - before)."""
    out = {}
    for name, t in after.items():
        if name.endswith("lora_A"):
            out[name] = t
        elif name.endswith("lora_B"):
            out[name] = t * scale
        else:
            out[name] = before[name] + scale * (t - before[name])
    return out


@torch.no_grad()
def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = set(state) - set(params)
    if missing:
        raise KeyError(f"adapter has weights this model lacks: {sorted(missing)[:3]}")
    for n, t in state.items():
        params[n].copy_(t)


def save_adapter(model: nn.Module, path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file({n: t.contiguous() for n, t in trainable_state(model).items()}, str(path))


def load_adapter(model: nn.Module, path: str | Path) -> None:
    from safetensors.torch import load_file

    load_trainable_state(model, load_file(str(path)))


def export_peft(model: nn.Module, folder: str | Path, base_model_name: str = "") -> Path:
    """Write adapter_config.json + adapter_model.safetensors in peft's on-disk layout."""
    from safetensors.torch import save_file

    mods = lora_modules(model)
    if not mods:
        raise ValueError("export_peft: the model has no LoRA layers")
    first = next(iter(mods.values()))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in mods.items():
        key = f"base_model.model.{name}"
        tensors[f"{key}.lora_A.weight"] = m.lora_A.detach().contiguous()
        tensors[f"{key}.lora_B.weight"] = m.lora_B.detach().contiguous()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name,
        "r": first.r, "lora_alpha": first.alpha, "use_rslora": first.use_rslora, "lora_dropout": first.dropout_p,
        "target_modules": sorted({n.rsplit(".", 1)[-1] for n in mods}), "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


PEFT_PREFIX = "base_model.model."


def load_peft(model: nn.Module, folder: str | Path) -> InjectionReport:
    """The inverse of export_peft: wrap exactly the layers a peft-layout LoRA adapter has weights for (r,
    lora_alpha, use_rslora from its adapter_config.json) and load those weights."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{folder}: adapter_config.json has peft_type {config.get('peft_type')!r}; only LORA loads")
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    paths = sorted({k[len(PEFT_PREFIX):].split(".lora_", 1)[0] for k in tensors if k.startswith(PEFT_PREFIX)})
    report = inject_lora(model, paths, r=int(config["r"]), alpha=float(config["lora_alpha"]),
                         use_rslora=bool(config.get("use_rslora", False)))
    with torch.no_grad():
        for name, m in lora_modules(model).items():
            for part in ("lora_A", "lora_B"):
                key = f"{PEFT_PREFIX}{name}.{part}.weight"
                if key not in tensors:
                    raise KeyError(f"{folder}: adapter_model.safetensors lacks {key}")
                getattr(m, part).copy_(tensors[key])
    return report
