"""The offline engine: plan, check, diff and price a Pulumi stack with no cloud and no CLI."""
