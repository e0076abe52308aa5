"""Rebuild the default bundle, ``models/digits-simclr``: python models/build_default.py

It is the best digits encoder that ``bench/train_digits.py`` measures: the
``digits-simclr`` recipe of ``training/recipes.py`` (a small ResNet trained with
SimCLR on the 1,297 training digits of scikit-learn's fixed split, labels unused),
exported with ``embedserve-train export``. The same two steps by hand:

    embedserve-train fit --recipe digits-simclr --out runs/digits-simclr
    embedserve-train export runs/digits-simclr --out models/digits-simclr --name digits-simclr --variants fp16,int8

Needs torch and the ``train`` extra (``pip install torch==2.13.0`` for the CPU
wheel, then ``pip install -e '.[cpu,dev,train]'``); about 7 minutes on 2 CPU
cores. CPU floating point differs a little between machines, so a rebuild gives
the same figures to within a fraction of a percent, not the same bytes. The
manifest's ``provenance`` records the config, training time, the k-NN table as
served, the parity figures, and the fp16/int8 variants' accuracy change.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

NAME = "digits-simclr"
RECIPE = "digits-simclr"


def build_bundle(
    name: str, recipe_name: str, out: Path, command: str, run_dir: Path | None, variants: tuple[str, ...] = ()
) -> Path:
    """Train ``recipe_name`` into ``run_dir`` (a temporary directory by default; a finished run there
    is exported as it is) and export it to ``out`` as bundle ``name``."""
    from training.export import export_bundle
    from training.loop import fit
    from training.recipes import recipe

    with tempfile.TemporaryDirectory(prefix=f"embedserve-{name}-") as tmp:
        run = Path(run_dir or Path(tmp) / "run")
        if not (run / "checkpoints" / "last.pt").exists():
            fit(recipe(recipe_name), run, progress_bar=sys.stderr.isatty())
        export_bundle(run, out, name=name, variants=variants, command=command)
    return out


def build(out: Path = HERE / NAME, run_dir: Path | None = None) -> Path:
    return build_bundle(NAME, RECIPE, out, "python models/build_default.py", run_dir, ("fp16", "int8"))


if __name__ == "__main__":
    print(build())
