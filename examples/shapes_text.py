"""Text against images with the shipped two-tower bundle ``shapes-clip``: text search and zero-shot.

    embedserve serve &                      # serves models/digits-simclr and models/shapes-clip
    python examples/shapes_text.py [--target 127.0.0.1:50051]

Sixty seeded shapes images (the generator ``shapes-clip`` was trained on; half of them of
shape x colour combinations it never saw, e.g. green triangles) are stored as PNG files;
then text queries find them and ten text prompts classify them zero-shot. Needs only
the ``cpu`` install (numpy and Pillow draw the shapes).
"""

from __future__ import annotations

import argparse

from embedserve.client import Client, item
from training.data.captions import HELD_OUT, captioned_shapes, combo_name
from training.data.shapes import COLOUR_NAMES

SEEN = ((0, 0), (1, 2), (2, 3), (3, 5), (4, 1))  # red circle, blue square, yellow triangle, ...


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    args = parser.parse_args()
    combos = SEEN + HELD_OUT
    shapes = captioned_shapes(60, seed=7, combos=combos)
    names = [combo_name(c // len(COLOUR_NAMES), c % len(COLOUR_NAMES)) for c in shapes.combos]
    with Client(args.target) as c:
        models = c.list_models()
        print(f"models: {[m.name for m in models.models]} (default {models.default_model})")
        if "shapes-example" in [x.name for x in c.list_collections()]:
            c.delete_collection("shapes-example")
        c.create_collection("shapes-example", model="shapes-clip")
        c.upsert("shapes-example", [item(str(i), image=b) for i, b in enumerate(shapes.images)])
        print(
            f"upserted {len(shapes)} shapes images ({len(shapes) // 2} of combinations never seen in training)"
        )

        hits = c.search("shapes-example", ["a green triangle"], k=3)[0]
        print("'a green triangle' ->", ", ".join(names[int(h.id)] for h in hits))
        caption = shapes.captions[0][0]  # every attribute: size, colour, shape, position
        best = c.search("shapes-example", [caption], k=1)[0][0]
        print(f"'{caption}' -> {shapes.captions[int(best.id)][0].removeprefix('a ')}")

        prompts = [(f"a {combo_name(s, col)}", combo_name(s, col)) for s, col in combos]
        results = c.classify(shapes.images, support=prompts, model="shapes-clip", k=1)
        right = [r.label == name for r, name in zip(results, names)]
        seen_ids = {s * len(COLOUR_NAMES) + col for s, col in SEEN}
        seen = [ok for ok, combo in zip(right, shapes.combos) if combo in seen_ids]
        never = [ok for ok, combo in zip(right, shapes.combos) if combo not in seen_ids]
        print(
            f"zero-shot over {len(prompts)} prompts: {sum(right)}/{len(right)} right "
            f"(seen combinations {sum(seen)}/{len(seen)}, never-seen {sum(never)}/{len(never)})"
        )
        c.delete_collection("shapes-example")


if __name__ == "__main__":
    main()
