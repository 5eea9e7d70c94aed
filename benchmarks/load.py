"""Load under chaos: 32 threads x 2,000 requests through one shared auth.

    python benchmarks/load.py [--threads 32] [--requests 2000]

The server expires, rotates and revokes sessions and injects 503s while the threads
run. Reported, not asserted: requests that failed, /auth calls per death, requests
that arrived with a token the server had already refused.
"""

from __future__ import annotations

import argparse
import sys

from requests_tanium_session import TaniumSessionAuth
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer
from requests_tanium_session.testing.chaos import run_load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="per thread")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds between a recovery and the next death (default 0.5): with 32 "
        "threads a queued request may need that long to reach its one resend",
    )
    args = parser.parse_args()
    with TaniumServer(record=0) as server:
        auth = TaniumSessionAuth.from_credentials(server.url, DEFAULT_USER[0], DEFAULT_USER[1])
        with auth:
            report = run_load(
                server, auth, threads=args.threads, per_thread=args.requests, settle=args.settle
            )
    print("command: python benchmarks/load.py " + " ".join(sys.argv[1:]))
    for line in report.lines():
        print(line)
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
