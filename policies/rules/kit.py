"""How a rule function becomes a CrossGuard policy: registration, type filter, safe properties,
config, reporting.

A resource rule is a plain generator `rule(resource) -> Iterable[str]` yielding one message per
violation; a stack rule is `rule(resources, config) -> Iterable[tuple[urn | None, str]]`. Each
domain module declares `RULES = Rules("<domain>")` and registers every rule with a decorator
right above its body (`@RULES.resource(id, level=..., description=..., source=..., types=...)`),
so the rule's id, level, source and type filter sit next to the code that enforces them.
Python packs have no type filter, so `resource_policy` checks `args.resource_type` before the
rule runs; a Helm release of a chart rules/helm_charts.py models is also judged through each
object its values render, as if declared (messages say which). Config defaults come from the rule's schema, so a rule behaves the same whether or
not the engine sends the reconciled config. A rule that raises does not take the other rules
down with it: the failure is reported as a violation of that rule, at its level (fail closed).
"""

# pulumi_policy lives only in policies/venv (it pins protobuf 5), not in the .venv pyright
# checks against; the pack's own tests exercise these imports through the real process.

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from rules.helm_charts import RELEASE_TYPES, rendered_objects
from rules.values import plain

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY


def current_stack() -> str:
    """The stack being previewed: the engine passes it to the pack as PULUMI_STACK."""
    return os.environ.get("PULUMI_STACK", "")


def only_on_stacks(config: Mapping[str, Any]) -> str:
    """For rules that apply to some stacks only (config `stacks`): the current stack, or
    NotApplicable when it is not one of them."""
    stack, stacks = current_stack(), [str(s) for s in config["stacks"]]
    if stack not in stacks:
        raise NotApplicable(f"stack {stack!r} is not one of {stacks}")
    return stack


class NotApplicable(Exception):
    """Raised by a rule that does not apply in this context (e.g. its config is absent)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Resource:
    """One resource as a resource rule sees it: plain properties, its provider's inputs."""

    type: str
    name: str
    urn: str
    props: dict[str, Any]
    provider_type: str | None = None
    provider_props: dict[str, Any] = field(default_factory=dict)
    protect: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StackResource:
    """One resource of the stack as a stack rule sees it."""

    type: str
    name: str
    urn: str
    props: dict[str, Any]
    parent: str | None = None
    provider_urn: str | None = None
    provider_props: dict[str, Any] = field(default_factory=dict)
    dependencies: tuple[str, ...] = ()
    # Input property → URNs it depends on (the engine's propertyDependencies).
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    protect: bool = False
    delete_before_replace: bool = False


ResourceRule = Callable[[Resource], Iterable[str]]
StackRule = Callable[[list[StackResource], Mapping[str, Any]], Iterable[tuple[str | None, str]]]
TypeFilter = Collection[str] | Callable[[str], bool]


def schema(
    properties: dict[str, dict[str, Any]], required: list[str] | None = None
) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties, required=required)


def string_list(default: list[str], description: str | None = None) -> dict[str, Any]:
    """The config schema of a list of strings (allowed values, exemptions ...)."""
    described = {"description": description} if description else {}
    return {"type": "array", "items": {"type": "string"}, **described, "default": default}


# The config of rules that apply to some stacks only (deletion protection: prod).
STACKS_SCHEMA: dict[str, Any] = {"stacks": string_list(["prod"], "the stacks this rule applies to")}


def _defaults(config_schema: PolicyConfigSchema | None) -> dict[str, Any]:
    if config_schema is None:
        return {}
    return {k: v["default"] for k, v in config_schema.properties.items() if "default" in v}


def _type_filter(types: TypeFilter) -> Callable[[str], bool]:
    if callable(types):
        return types
    accepted = frozenset(types)
    return accepted.__contains__


def _report_crash(name: str, report: Callable[[str], None]) -> None:
    error = sys.exc_info()[1]
    traceback.print_exc(file=sys.stderr)
    report(f"internal error in rule {name}: {type(error).__name__}: {error}")


def resource_policy(
    *,
    name: str,
    description: str,
    level: EnforcementLevel,
    types: TypeFilter,
    rule: ResourceRule,
    config_schema: PolicyConfigSchema | None = None,
    tags: Iterable[str] = (),
) -> ResourceValidationPolicy:
    applies = _type_filter(types)
    defaults = _defaults(config_schema)

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        props, rendered = None, []
        if args.resource_type in RELEASE_TYPES:  # judged through the objects its values render
            props = plain(args.props)
            rendered = rendered_objects(args.resource_type, props, args.name)
            rendered = [o for o in rendered if applies(o.type)]
        if not applies(args.resource_type) and not rendered:
            return
        provider = args.provider
        resource = Resource(
            type=args.resource_type,
            name=args.name,
            urn=args.urn,
            props=plain(args.props) if props is None else props,
            provider_type=provider.resource_type if provider else None,
            provider_props=plain(provider.props) if provider else {},
            protect=bool(args.opts.protect),
            config={**defaults, **args.get_config()},
        )
        subjects = [("", resource)] if applies(resource.type) else []
        subjects += [
            (f"release renders {o.label}: ", replace(resource, type=o.type, props=o.props))
            for o in rendered
        ]
        for prefix, subject in subjects:
            try:
                messages = list(rule(subject))
            except NotApplicable as exc:
                if subject is resource:
                    args.not_applicable(exc.reason)
                continue
            except Exception:
                _report_crash(name, lambda message: report_violation(message, None))
                continue
            for message in messages:
                report_violation(prefix + message, None)

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=level,
        config_schema=config_schema,
        tags=list(tags),
    )


def stack_policy(
    *,
    name: str,
    description: str,
    level: EnforcementLevel,
    rule: StackRule,
    config_schema: PolicyConfigSchema | None = None,
    tags: Iterable[str] = (),
) -> StackValidationPolicy:
    defaults = _defaults(config_schema)

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            StackResource(
                type=r.resource_type,
                name=r.name,
                urn=r.urn,
                props=plain(r.props),
                parent=r.parent.urn if r.parent is not None else r.opts.parent,
                provider_urn=r.provider.urn if r.provider else None,
                provider_props=plain(r.provider.props) if r.provider else {},
                dependencies=tuple(d.urn for d in r.dependencies),
                property_dependencies={
                    k: tuple(d.urn for d in v) for k, v in r.property_dependencies.items()
                },
                protect=bool(r.opts.protect),
                delete_before_replace=bool(r.opts.delete_before_replace),
            )
            for r in args.resources
        ]
        try:
            findings = list(rule(resources, {**defaults, **args.get_config()}))
        except NotApplicable as exc:
            args.not_applicable(exc.reason)
            return
        except Exception:
            _report_crash(name, lambda message: report_violation(message, None))
            return
        for urn, message in findings:
            report_violation(message, urn)

    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=level,
        config_schema=config_schema,
        tags=list(tags),
    )


@dataclass
class Rules:
    """The rules of one domain, in the order they are declared: the README's table follows it,
    and the domain is each rule's first tag."""

    domain: str
    policies: list[Policy] = field(default_factory=list)

    def resource(
        self,
        name: str,
        *,
        level: EnforcementLevel,
        description: str,
        source: str,
        types: TypeFilter,
        config: PolicyConfigSchema | None = None,
    ) -> Callable[[ResourceRule], ResourceRule]:
        """Register the decorated function as resource rule `name` for the `types` it judges."""

        def register(rule: ResourceRule) -> ResourceRule:
            self.policies.append(
                resource_policy(
                    name=name,
                    description=f"{description} Source: {source}",
                    level=level,
                    types=types,
                    rule=rule,
                    config_schema=config,
                    tags=(self.domain,),
                )
            )
            return rule

        return register

    def stack(
        self,
        name: str,
        *,
        level: EnforcementLevel,
        description: str,
        source: str,
        config: PolicyConfigSchema | None = None,
    ) -> Callable[[StackRule], StackRule]:
        """Register the decorated function as stack rule `name` (it sees every resource)."""

        def register(rule: StackRule) -> StackRule:
            self.policies.append(
                stack_policy(
                    name=name,
                    description=f"{description} Source: {source}",
                    level=level,
                    rule=rule,
                    config_schema=config,
                    tags=(self.domain,),
                )
            )
            return rule

        return register
