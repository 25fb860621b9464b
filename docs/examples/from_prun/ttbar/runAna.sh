#!/bin/sh
# The job of docs/examples/from_prun/analysisbase_release.py: reads its input file names from the file named
# by its first argument (prun --writeInputToTxt IN:in.txt), one line of comma-separated names.
echo "analysing $(tr ',' '\n' < "$1" | wc -l) files"
