"""Settle delays: a pause after grants or API enablements that Google applies eventually.

Pulumi orders a resource after what it depends on, but a grant or an enabled API that exists
is not yet in effect everywhere: a CMEK cluster created the second its key's grant returns can
be refused by KMS, a pod can ask for its Google token before its Workload Identity binding
reaches the token service, a fleet membership can be made before the hub's agent holds its
role. Each group of grants (a key ring's, the identity pool's, the gateway's, the service
agents') and the program's API enablements is followed by one `time:index/sleep:Sleep` that
what uses them waits for: one per group, run in parallel with everything else, and only when
the group's members change (`triggers`), so an update that adds nothing waits for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumiverse_time as time

# IAM docs, "Access change propagation": changes to allow policies typically propagate within 2
# minutes (some take 7 minutes or longer). A newly created service agent, and the role Google
# grants it on creation, are the same kind of change. Two minutes covers the typical case; the
# longest chain before the first cluster (agents, then key grants) pays it twice, once.
IAM_PROPAGATION = "120s"
# A freshly enabled API can answer SERVICE_DISABLED for a while ("If you enabled this API
# recently, wait a few minutes for the action to propagate to our systems and retry"); the
# provider already waits for the enablement's operation and for the service to list as enabled.
API_PROPAGATION = "120s"


def settle(
    name: str,
    after: Sequence[pulumi.Resource],
    duration: str,
    parent: pulumi.Resource,
) -> time.Sleep:
    """A delay of `duration` once every resource of `after` exists, for their users to wait
    for. It runs again whenever the group changes (a resource added to or taken from it), so a
    later update that grants something new waits for that too."""
    return time.Sleep(
        name,
        create_duration=duration,
        triggers={"after": ",".join(sorted(r.pulumi_resource_name for r in after))},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(after)),
    )
