"""Rebuild the shipped image + text bundle, ``models/shapes-clip``: python models/build_shapes_clip.py

The ``shapes-clip`` recipe of ``training/recipes.py``: a small ResNet image tower
and a 2-layer Transformer text tower trained jointly, CLIP-style, on 6,000
seeded captioned shapes ("a small red triangle at the top left"), with five
shape x colour combinations (every green triangle, blue circle, yellow star,
purple square, red cross) never shown, then exported with
``embedserve-train export``. The same two steps by hand:

    embedserve-train fit --recipe shapes-clip --out runs/shapes-clip
    embedserve-train export runs/shapes-clip --out models/shapes-clip --name shapes-clip

Needs torch and the ``train`` extra; about 13 minutes on 2 CPU cores. The
manifest's ``provenance`` records the config, the training time, the parity of
both towers and the zero-shot / recall figures as served.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_default import build_bundle  # noqa: E402

NAME = "shapes-clip"


def build(out: Path = HERE / NAME, run_dir: Path | None = None) -> Path:
    return build_bundle(NAME, NAME, out, "python models/build_shapes_clip.py", run_dir)


if __name__ == "__main__":
    print(build(run_dir=Path(sys.argv[1]) if len(sys.argv) > 1 else None))
