"""The plan diff: what a change does to each stack, as a reviewer needs to read it.

Both sides are planned by the offline engine in their own process (`python -m tools plan`), the
base from a temporary `git worktree` of the base ref, the head from the working tree or another
worktree, so one program's modules never leak into the other's plan. Resources are matched by
URN: added, removed, updated in place or replaced, with every changed input path shown old → new,
secrets masked. Replacements come from policies/rules/replace_on_change.yaml (shared with the
policy pack), a table of the input paths that force a new resource for the types where that
matters, each with its source; paths that update in place but disrupt (GKE recreating nodes,
Redis resharding) are flagged too. Policy findings that appear or disappear and the cost change
complete the picture.

- `rules`: the replacement table and its lookup;
- `compare`: resource and inventory diffs, masking, a stack's two sides;
- `worktree`: git refs and temporary worktrees;
- `sides`: planning, pricing and checking both sides of each stack (`diff_stacks`);
- `describe`: the wording both renderers share;
- `text`, `markdown`: the two renderers (the PR comment charts the cost by category).
"""

from tools.diff.compare import (
    ABSENT,
    InputChange,
    Kind,
    ResourceChange,
    Side,
    StackDiff,
    compare,
    diff_inventories,
    diff_resource,
    flatten,
    is_secret,
)
from tools.diff.describe import MASK, cost_deltas, show
from tools.diff.markdown import COMMENT_MARKER, cost_chart, render_markdown
from tools.diff.rules import Effect, Rule, load_table, rule_for
from tools.diff.sides import Options, diff_stacks, plan_program
from tools.diff.text import render_text
from tools.diff.worktree import DiffError, worktree

__all__ = [
    "ABSENT",
    "COMMENT_MARKER",
    "MASK",
    "DiffError",
    "Effect",
    "InputChange",
    "Kind",
    "Options",
    "ResourceChange",
    "Rule",
    "Side",
    "StackDiff",
    "compare",
    "cost_chart",
    "cost_deltas",
    "diff_inventories",
    "diff_resource",
    "diff_stacks",
    "flatten",
    "is_secret",
    "load_table",
    "plan_program",
    "render_markdown",
    "render_text",
    "rule_for",
    "show",
    "worktree",
]
