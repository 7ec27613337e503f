"""The v5 bundle's merge calibrated on 4,000 training images the nets trained on (as every earlier
bundle's was), beside the shipped-way calibration on the 4,000 held-out ones: the paired test of
--merge-holdout. Writes into a copy of the bundle."""
import json, shutil, sys, logging
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
from agilenn.datasets import load_dataset
from agilenn.training.data import merge_holdout_rows
from agilenn.training.merge_calibration import add_merge_calibration

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
if dst.exists():
    shutil.rmtree(dst)
shutil.copytree(src, dst)
m = json.loads((src / "manifest.json").read_text())
train = load_dataset(m["dataset"], "train")
test = load_dataset(m["dataset"], "test")
kept, held = merge_holdout_rows(train, m["training"]["config"])
seen = kept.subset(len(held), seed=0)
add_merge_calibration(dst, (seen.images, seen.labels), (test.images, test.labels),
                      train_note=f" ({len(seen)} of the images the nets trained on, fixed random subset, seed 0)")
for name, d in (("held-out", src), ("seen", dst)):
    mm = json.loads((d / "manifest.json").read_text())
    cal = mm["merge"]["calibration"]
    rows = mm["metrics"]["merge"]["rows"]
    print(name, "calibration combined acc (all ch)", cal["combined_accuracy"][-1] if isinstance(cal["combined_accuracy"], list) else cal["combined_accuracy"])
    print(name, "alpha", [round(a, 3) for a in mm["merge"]["alpha_by_channels"]])
    print(name, "agent", [(r["channels"], round(100 * r["agent_accuracy"], 2)) for r in rows])
