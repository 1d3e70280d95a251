#!/usr/bin/env python3
"""Plugin decision medians of two builds, measured in the same run.

The machine is shared and noisy, so a figure only means something beside a baseline taken
at the same time: this runs the criterion benchmark `benches/plugins.rs` of a baseline
build and of this build in alternation, ROUNDS times, and prints each decision's median
(µs, the median of the rounds' medians) for both, with the ratio.

    # the bench binary of an earlier commit, built in its own checkout
    cargo bench -p hestia-bench --bench plugins --no-run      # prints the binary's path
    python3 bench/plugins_ab.py --baseline-bin OLD_BIN --bin NEW_BIN [--rounds 3]

Extra arguments after `--` go to both binaries (e.g. a criterion filter: `-- warm`).
Medians come from criterion's `estimates.json`, not from its printed `time:` line (that one
is the mean, or the slope).
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile


def run(binary, home, extra):
    subprocess.run(
        [binary, "--bench", "--warm-up-time", "1", "--measurement-time", "3", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
        env={"CRITERION_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    medians = {}
    for estimates in pathlib.Path(home).glob("**/new/estimates.json"):
        # criterion's directory for `group/function` is `group_function`.
        name = str(estimates.parent.parent.relative_to(home))
        data = json.loads(estimates.read_text())
        medians[name] = data["median"]["point_estimate"] / 1000.0  # ns -> µs
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-bin", required=True)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()

    results = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for label, binary in (("baseline", args.baseline_bin), ("this", args.bin)):
                home = pathlib.Path(tmp) / f"{label}-{round_}"
                print(f"round {round_ + 1}/{args.rounds}: {label}", file=sys.stderr)
                results[label].append(run(binary, home, args.extra))

    def median_of(label, name):
        values = [r[name] for r in results[label] if name in r]
        return statistics.median(values) if values else None

    names = sorted(set(results["baseline"][0]) | set(results["this"][0]))
    print("| decision | baseline (µs) | this (µs) | this / baseline |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        before, after = median_of("baseline", name), median_of("this", name)
        ratio = f"{after / before:.2f}" if before and after else "-"
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        print(f"| {name} | {fmt(before)} | {fmt(after)} | {ratio} |")


if __name__ == "__main__":
    main()
