"""Stage boundary: run the frozen blocks below fine_tune's top blocks once per image and cache
their output, so that each fine-tuning epoch runs only the blocks it trains.

With fine_tune.unfreeze N (the top N blocks) and no augmentation, the blocks below run in
inference mode on the same pixels every epoch: their output is a fixed function of the image,
computed here once (train and validation splits, float16, chunk by chunk into memory-mapped
.npy files), in the precision the features stage chose for the train and validation features
(data/features/precision.json: mixed bfloat16 where `auto` found it faster, as the training
that reads the cache runs in it too). Otherwise (unfreeze all, augment, a backbone without
cuttable blocks) the folder holds only cache.json saying why, and fine_tune runs through the
whole model as before.

    python -m stages.boundary data/prepared models/feature_extractor.keras data/features \
        data/boundary
"""

import argparse
import json
from pathlib import Path

from transfer_pipeline.plumbing.errors import exit_on_pipeline_error
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.running.backend import select as select_backend

CACHED_SPLITS = ("train", "val")


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("extractor", type=Path, help="the frozen extractor (.keras)")
    parser.add_argument(
        "features", type=Path, help="the features folder: what precision train and val had"
    )
    parser.add_argument("cache", type=Path, help="output folder: <split>.npy and cache.json")
    args = parser.parse_args()
    params = load_params("boundary")  # validate before paying for Keras and its backend
    outputs = StageOutputs.of_stage(
        "boundary",
        folders=[args.cache],
        inputs=[args.prepared, args.extractor, args.features],
    )
    backbone, settings = params["model"]["backbone"], params["fine_tune"]
    select_backend(params["compute"]["backend"])

    import numpy as np
    from numpy.lib.format import open_memmap

    from transfer_pipeline.data.store import load_features_precision, load_split
    from transfer_pipeline.models.blocks import (
        CACHE_DTYPE,
        PLAN_FILE,
        cache_bytes,
        cache_plan,
        ensure_room,
        size_text,
        trunk,
        write_cache,
    )
    from transfer_pipeline.models.model import load_model, twin_extractor

    why_not = cache_plan(backbone, settings)
    if why_not:
        with outputs:
            plan = {"cached": False, "reason": why_not}
            outputs.path(args.cache).joinpath(PLAN_FILE).write_text(_json(plan))
        print(f"boundary: no cache ({why_not}); fine_tune runs the whole model", flush=True)
        return
    blocks = settings["unfreeze"]
    extractor = load_model(args.extractor)  # float32, as saved
    precision = load_features_precision(args.features)["train"]
    if precision != "float32":  # the faster twin the features stage extracted train and val on
        model = params["model"]
        extractor = twin_extractor(
            extractor, backbone, model["image_size"], precision, model["weights"]
        )
    frozen = trunk(extractor, backbone, blocks)
    shape = tuple(int(side) for side in frozen.output.shape[1:])
    sizes = {split: len(load_split(args.prepared, split)[1]) for split in CACHED_SPLITS}
    needed = cache_bytes(sum(sizes.values()), shape)
    what = (
        f"the cache below the top {blocks} block{'s' if blocks > 1 else ''} of {backbone} "
        f"({' x '.join(map(str, shape))} {CACHE_DTYPE} per image, "
        f"{cache_bytes(1, shape) / 1e3:.0f} KB; {sum(sizes.values()):,} train and val images)"
    )
    print(f"boundary: {what}: {size_text(needed)}", flush=True)
    # Refused before anything is written; the staging folder is beside the output.
    ensure_room(_existing(args.cache.parent), needed, what)
    with outputs:
        folder = outputs.path(args.cache)
        for split in CACHED_SPLITS:
            images, _ = load_split(args.prepared, split)
            cache = open_memmap(
                folder / f"{split}.npy", mode="w+", dtype=CACHE_DTYPE, shape=(len(images), *shape)
            )
            write_cache(frozen, images, params["features"]["batch_size"], cache, split)
            cache.flush()
            del cache  # closes the memory map
        plan = {
            "cached": True,
            "blocks": blocks,
            "shape": list(shape),
            "dtype": CACHE_DTYPE,
            "computed_in": precision,
            "images": sizes,
            "bytes": needed,
        }
        folder.joinpath(PLAN_FILE).write_text(_json(plan))
    print(f"boundary: cached {sizes} images, {np.prod(shape):,} values each", flush=True)


def _json(data) -> str:
    return json.dumps(data, indent=2) + "\n"


def _existing(folder: Path) -> Path:
    """The folder, or the nearest folder above it that exists (whose disk it will be on)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


if __name__ == "__main__":
    main()
