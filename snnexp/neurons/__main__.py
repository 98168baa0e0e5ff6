"""``python -m snnexp.neurons --check [--no-nvrtc] [--no-host]``: check the fused neuron kernels against the
neurons' torch reference (see :mod:`snnexp.neurons.check`)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snnexp.neurons", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compile every variant (NVRTC) and check the host math")
    parser.add_argument("--no-nvrtc", action="store_true", help="skip the NVRTC compile check")
    parser.add_argument("--no-host", action="store_true", help="skip the host math check")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 0
    from snnexp.neurons import check

    return 0 if check.run(nvrtc=not args.no_nvrtc, host=not args.no_host) else 1


if __name__ == "__main__":
    sys.exit(main())
