"""`python -m tests.fuzz` (or `scripts/fuzz`): the differential query generator's CLI.

    scripts/fuzz --queries 1000 --seed 3           # one seed
    scripts/fuzz --queries 500 --seeds 1,2,3,4,5   # several
    scripts/fuzz --seed 3 --only 57 --show-sql     # one query again, as found
    scripts/fuzz --seed 3 --only 57 --no-shrink    # …without shrinking it

Reports go to --out (default target/fuzz/): one Markdown file per finding (seed, query,
original and shrunk SQL, the three engines' results, the rule blamed) and summary.md /
summary.json. The exit status is 1 when any difference was found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .engines import ROOT
from .gen import CLASSES
from .compare import ENGINES, Comparison, describe
from .runner import Fuzzer, format_summary
from .shrink import attribute_sql


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=200, help="queries per seed (default 200)")
    p.add_argument("--seed", type=int, default=1, help="the seed (default 1)")
    p.add_argument("--seeds", help="comma-separated seeds, instead of --seed")
    p.add_argument("--only", help="comma-separated query indices to run (of each seed)")
    p.add_argument("--class", dest="cls", choices=sorted(CLASSES),
                   help="generate only queries of this class")
    p.add_argument("--out", type=Path, default=ROOT / "target" / "fuzz",
                   help="where reports go (default target/fuzz/)")
    p.add_argument("--tarn-bin", default=os.environ.get("TARN_BIN") or str(ROOT / "target" / "debug" / "tarn"))
    p.add_argument("--no-shrink", action="store_true", help="report differences unshrunk")
    p.add_argument("--shrink-per-key", type=int, default=2,
                   help="differences shrunk per kind of difference (default 2); the others "
                        "are counted as repeats")
    p.add_argument("--max-shrink-runs", type=int, default=150,
                   help="candidate queries the shrinker may run per difference (default 150)")
    p.add_argument("--tarn-config", default="",
                   help="extra --datafusion-config settings for every Tarn server (K=V,…)")
    p.add_argument("--show-sql", action="store_true", help="print every query")
    p.add_argument("--sql", help="instead of generating queries, run this one (in both "
                   "dialects) and attribute any difference; rows compare as multisets")
    p.add_argument("--keep", action="store_true", help="keep the lake and catalog (printed)")
    args = p.parse_args(argv)

    if not Path(args.tarn_bin).exists():
        p.error(f"tarn binary not found at {args.tarn_bin} (set TARN_BIN or --tarn-bin)")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    only = [int(i) for i in args.only.split(",")] if args.only else None
    extra = tuple(x for x in args.tarn_config.split(",") if x)
    # On SIGTERM, unwind (stopping the servers, removing the work directory) as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="tarn-fuzz-"))
    print(f"lake and catalog in {work}; tarn {args.tarn_bin}; reports in {args.out}", flush=True)
    fuzzer = Fuzzer(args.tarn_bin, work, args.out,
                    shrink=not args.no_shrink, shrink_per_key=args.shrink_per_key,
                    max_shrink_runs=args.max_shrink_runs, extra_config=extra,
                    log=lambda m: print(m, flush=True))
    try:
        if args.sql:
            return check_one(fuzzer, args.sql)
        summary = fuzzer.run(seeds, args.queries, only=only, cls=args.cls, show=args.show_sql)
    finally:
        fuzzer.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(format_summary(summary))
    return 1 if summary.differences else 0


def check_one(fuzzer: Fuzzer, sql: str) -> int:
    """Runs one hand-written query on the three engines and attributes a difference."""
    cmp = Comparison(False, [])
    outcomes = fuzzer.engines.run(sql, sql)
    for name in ENGINES:
        print(f"--- {name}: {describe(outcomes[name], 10)}")
    groups = cmp.groups(outcomes)
    if len(groups) == 1:
        print("\nno difference")
        return 0
    a = attribute_sql(fuzzer.engines, sql, cmp, outcomes)
    print(f"\n{' | '.join(', '.join(g) for g in groups)}: {a.label}. {a.detail}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
