"""A stand-in for a training script: sleeps a little, writes a result, fails for lr > 0.9."""

import argparse
import json
import os
import random
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()

rank = os.environ["SATURN_RUN_LOCAL_RANK"]
print(f"training with lr={args.lr} in slot {rank}", flush=True)
time.sleep(random.uniform(0.2, 1.0))
if args.lr > 0.9:
    print(f"lr={args.lr} diverged", file=sys.stderr)
    sys.exit(1)
results = os.environ["SATURN_RUN_LOCAL_RESULTS_DIR"]
with open(os.path.join(results, "metrics.json"), "w") as f:
    json.dump({"lr": args.lr, "loss": round(1 / (1 + args.lr), 4)}, f)
print("done")
