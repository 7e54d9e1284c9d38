"""Markdown pieces every table shares: the table itself and the one-line provenance under it."""
from __future__ import annotations

from typing import Any, Sequence


def provenance_line(meta: dict) -> str:
    """One Markdown line stating data, model and checkpoint (no date, so tables are reproducible)."""
    parts = [f"{meta.get(key, 'fp32')} {part}" for key, part in (("encoder_precision", "encoder"), ("precision", "decoder"))
             if meta.get(key, "fp32") != "fp32"]
    fast = f", {' + '.join(parts)} autocast" if parts else ""
    return (
        f"_Data: {meta['data']} ({meta['split']} split, {meta.get('n_slices', '?')} slices). "
        f"Model: {meta['model']} ({meta['checkpoint']}, sha256 {meta['checkpoint_sha256'][:12]}). "
        f"Seed {meta['seed']}{fast}._"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
