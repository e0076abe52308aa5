"""What a tower embeds: an encoded image or a text (the request contents the models layer accepts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageInput:
    data: bytes  # encoded JPEG / PNG / WebP / BMP / GIF


@dataclass(frozen=True)
class TextInput:
    text: str


ModelInput = ImageInput | TextInput
