"""The analysis the grid jobs of prun_analysis.py run: the sandbox directory holds it (packed and uploaded
at run time, as prun does with the working directory)."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--in", dest="inputs", required=True, help="comma-separated input files (prun's %%IN)")
parser.add_argument("--out", required=True)
args = parser.parse_args()
with open(args.out, "w") as out:
    out.write(f"{len(args.inputs.split(','))} input files\n")
