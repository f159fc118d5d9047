"""Which role may call which RPC, and which RPCs are writes (audited).

A pure table, so the whole matrix can be read in one place and tested method by method.
A method nobody listed is admin-only and audited: a new RPC is closed until someone
decides otherwise.
"""

from __future__ import annotations

from services.access.domain import Role

_PROFILES = "/switchboard.profiles.v1.ProfileService/"
_SEGMENTS = "/switchboard.segments.v1.SegmentService/"
_OUTREACH = "/switchboard.segments.v1.OutreachService/"
_ROUTING = "/switchboard.routing.v1.RoutingService/"
_WIDGETS = "/switchboard.routing.v1.WidgetService/"
_REPORTS = "/switchboard.reports.v1.ReportService/"
_ACCESS = "/switchboard.access.v1.AccessService/"

# Load balancers and generic clients must reach these without a key; they hold no data.
PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# Beyond admin, who may call what.
GRANTS: dict[Role, frozenset[str]] = {
    Role.WIDGET: frozenset({_WIDGETS + "GetWidgetConfig", _WIDGETS + "EvaluateEscalation"}),
    Role.CONSOLE: frozenset(
        _ROUTING + name
        for name in (
            "GetAgent",
            "SetAgentStatus",
            "GetAgentAssignments",
            "AssignNext",
            "WatchAssignments",
            "GetConversation",
            "RecordConversationEvent",
            "GetConversationCustomer",
        )
    ),
    Role.SYNC: frozenset(
        _PROFILES + name
        for name in (
            "CreateCustomer",
            "GetCustomer",
            "BatchGetCustomers",
            "UpdateCustomer",
            "UpsertCustomers",
            "AddTags",
            "RemoveTags",
            "RecordUsageEvents",
        )
    ),
}

# Calls that change nothing; every other call is a write and lands in the audit log.
READS = frozenset(
    {
        *(
            _PROFILES + name
            for name in (
                "GetCustomer",
                "BatchGetCustomers",
                "ListCustomers",
                "ListCustomerChanges",
                "GetFieldFreshness",
            )
        ),
        *(
            _SEGMENTS + name
            for name in (
                "GetSegment",
                "ListSegments",
                "ListSegmentRevisions",
                "EvaluateCustomer",
                "TestRule",
                "PreviewSegment",
                "ListMemberships",
                "ListMembershipChanges",
                "GetMigrationReport",
                "LintSegments",
                "GetSegmentSizes",
                "GetRetention",
            )
        ),
        *(
            _OUTREACH + name
            for name in (
                "GetWebhookEndpoint",
                "ListWebhookEndpoints",
                "ListOutreachSubscriptions",
                "ListDeliveries",
                "GetDelivery",
            )
        ),
        *(
            _ROUTING + name
            for name in (
                "GetCalendar",
                "ListCalendars",
                "GetSlaPolicy",
                "ListSlaPolicies",
                "GetQueue",
                "ListQueues",
                "GetRoutingRules",
                "ListRoutingRuleRevisions",
                "GetAgent",
                "ListAgents",
                "GetConversation",
                "GetAgentAssignments",
                "WatchAssignments",
                "ListQueueConversations",
                "GetConversationCustomer",
            )
        ),
        *(
            _WIDGETS + name
            for name in (
                "GetPersona",
                "ListPersonas",
                "GetEscalationPolicy",
                "ListEscalationPolicies",
                "GetWidgetPolicies",
                "GetWidgetConfig",
            )
        ),
        *(
            _REPORTS + name
            for name in ("GetScorecard", "CompareCohort", "GetMigrationMatrix", "GetSegmentHealth")
        ),
        *(_ACCESS + name for name in ("ListApiKeys", "ListAuditEntries")),
    }
)


def is_public(method: str) -> bool:
    return method.startswith(PUBLIC_PREFIXES)


def may_call(role: Role, method: str) -> bool:
    return role is Role.ADMIN or method in GRANTS.get(role, frozenset())


# Calls that change something in some answers only, audited when the handler says it may
# have written: an escalation check routes the conversation only when it hands over (so a
# widget's every bot turn does not fill the audit log, and wait for its insert), and a
# validate_only RouteConversation is a dry run that stores nothing.
SOMETIMES_WRITES = frozenset({_WIDGETS + "EvaluateEscalation", _ROUTING + "RouteConversation"})


def is_write(method: str) -> bool:
    return method not in READS
