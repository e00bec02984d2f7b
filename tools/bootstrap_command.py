"""`python -m tools bootstrap`: print a stack's bootstrap, the gcloud commands its first
`pulumi up` needs run first (tools/bootstrap.py writes them, infra/bootstrap.py says why).

    python -m tools bootstrap --stack prod --github-repository OWNER/REPO > bootstrap-prod.sh
    QUOTA_CONTACT=you@example.com bash bootstrap-prod.sh

Run it once per project, as a project owner. `--state-env` prints only the stack's
`PULUMI_BACKEND_URL` and `PULUMI_SECRETS_PROVIDER` (the bucket and key the bootstrap creates),
one `NAME=value` a line, as deploy.yml appends them to `$GITHUB_ENV`. Exit codes: 0 printed;
2 bad input (arguments, the stack file or its configuration), one `error:` line each. The
program's modules load only when it runs (the CLI itself imports none).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from tools.engine import PlanError, read_project, stack_config
from tools.plan_command import EXIT_BAD_INPUT, EXIT_OK

REPOSITORY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bootstrap",
        help="print a stack's bootstrap (what its first pulumi up needs first) as gcloud commands",
    )
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument(
        "--program", type=Path, default=Path.cwd(), help="Pulumi project directory (default: .)"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--github-repository",
        metavar="OWNER/REPO",
        help="the repository whose workflows deploy and preview the stack",
    )
    what.add_argument(
        "--state-env",
        action="store_true",
        help="print only PULUMI_BACKEND_URL and PULUMI_SECRETS_PROVIDER, as NAME=value lines",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.state_env and not REPOSITORY_RE.match(args.github_repository):
        print(
            f"error: --github-repository {args.github_repository!r} is not a GitHub repository; "
            "allowed: OWNER/REPO",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from infra.config import ConfigError, StackConfig

    try:
        project = read_project(args.program)
        # As the program gets it: Pulumi.yaml's defaults under it, from stackConfigDir if named.
        values = stack_config(project, args.stack).values
        config = StackConfig.load(args.stack, values)
    except (PlanError, ConfigError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.state_env:
        from infra.bootstrap import state_env

        sys.stdout.write("".join(f"{k}={v}\n" for k, v in state_env(config.project_id).items()))
        return EXIT_OK
    from tools.bootstrap import script

    sys.stdout.write(script(config, args.stack, args.github_repository))
    return EXIT_OK
