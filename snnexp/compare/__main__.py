"""``python -m snnexp.compare DIR [DIR ...] [--by method,neuron] [--out DIR] [--study URL [--study-name NAME]]``:
the comparison as Markdown on stdout, and compare.csv, compare.md, report.html and PNG figures in ``--out``."""

from __future__ import annotations

import argparse
import sys

DEFAULT_OUT = "compare_report"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m snnexp.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run, multirun or sweep directories (recursive)")
    parser.add_argument("--by", type=lambda s: [k.strip() for k in s.split(",") if k.strip()],
                        help="group by these keys (comma-separated), e.g. method,neuron; default: those that vary")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"report directory (default: ./{DEFAULT_OUT}/)")
    parser.add_argument("--study", metavar="STORAGE_URL", help="an Optuna storage, e.g. sqlite:///sweep/optuna.db")
    parser.add_argument("--study-name", metavar="NAME", help="the study in --study (default: its only study)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; every problem with the input is one line on stderr, exit status 1."""
    import matplotlib

    matplotlib.use("Agg")  # figures are files: no window, no display needed
    from snnexp.compare import CompareError, build_report, compare, markdown, read_study, write_files

    args = parse_args(argv)
    if args.study_name and not args.study:
        return _fail("--study-name needs --study STORAGE_URL")
    try:
        comparison = compare(args.dirs, by=args.by)
        study = read_study(args.study, args.study_name) if args.study else None
        report = build_report(comparison, study)
        written = write_files(report, args.out)
    except CompareError as err:
        return _fail(str(err))
    except OSError as err:  # e.g. --out not writable
        return _fail(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "))
    print(markdown(report))
    for line in comparison.warnings:
        print(f"snnexp.compare: warning: {line}", file=sys.stderr)
    hint = _study_hint(comparison, args.study)
    if hint:
        print(f"snnexp.compare: {hint}", file=sys.stderr)
    print(f"snnexp.compare: report written to {written[2]} ({len(written)} files in {args.out})", file=sys.stderr)
    return 0


def _study_hint(comparison, study: str | None) -> str | None:
    """A sweep directory holds its Optuna study beside the runs: say how to add it to the report."""
    found = comparison.loaded.studies
    if study or not found:
        return None
    return f"an Optuna study was found: add --study sqlite:///{found[0]} to report it"


def _fail(message: str) -> int:
    print(f"snnexp.compare: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
