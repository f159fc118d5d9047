"""Widget decisions without I/O: validating personas, escalation policies and their
assignment, rendering greetings, choosing what a customer gets, and deciding when the bot
hands a conversation over and what the visitor is promised then.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from services.core.errors import FieldViolation
from services.routing.domain import Channel, SlaTarget
from services.routing.logic import languages_problems, resource_id_problems
from services.widgets.domain import (
    BotTurn,
    Choice,
    EscalationPolicy,
    HandoverReason,
    Offer,
    Persona,
    Verdict,
    WidgetPolicies,
)

PLACEHOLDERS = ("first_name", "company_name")
MAX_DISPLAY_NAME = 200
MAX_GREETING = 500
MAX_GUARDRAILS = 4000
MAX_VALUE = 100
MAX_BOT_TURNS = 100
MAX_KEYWORDS = 50
MAX_KEYWORD = 64
MAX_ASSIGNMENTS = 200
MAX_TURN_COUNT = 10_000
MAX_MESSAGE = 4000
HANDOVER_CHANNELS = frozenset({Channel.CHAT, Channel.EMAIL})

_BRACE = re.compile(r"[{}]")
_PUNCTUATION = ",.!?;:"
# Marks that join a sentence to what follows, so a dropped value can leave them dangling.
_SOFT_PUNCTUATION = ",;:"
# Bidirectional controls are format characters, not Cc, but they can reorder what a visitor
# reads, so a value loses them with the other control characters.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _length_problems(value: str, field: str, limit: int) -> list[FieldViolation]:
    return [FieldViolation(field, f"at most {limit} characters")] if len(value) > limit else []


def _optional_id_problems(value: str, field: str) -> list[FieldViolation]:
    return resource_id_problems(value, field) if value else []


def _counted(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


def _range_problems(
    value: float | None, field: str, low: float, high: float
) -> list[FieldViolation]:
    # NaN fails every comparison, so it is refused too.
    if value is None or low <= value <= high:
        return []
    return [FieldViolation(field, f"must be between {low:g} and {high:g}")]


# ---- greetings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placeholder:
    name: str


@dataclass(frozen=True)
class _StrayBrace:
    brace: str
    position: int


def _tokens(template: str) -> Iterator[str | _Placeholder | _StrayBrace]:
    """Literal text, placeholders and unbalanced braces, in order; never raises, so both the
    validator and the renderer read a template the same way."""
    position = 0
    while position < len(template):
        found = _BRACE.search(template, position)
        if found is None:
            yield template[position:]
            return
        if found.start() > position:
            yield template[position : found.start()]
        position = found.start()
        brace = template[position]
        if template.startswith(brace * 2, position):
            yield brace
            position += 2
            continue
        if brace == "{":
            closing = _BRACE.search(template, position + 1)
            if closing is not None and closing.group() == "}":
                yield _Placeholder(template[position + 1 : closing.start()])
                position = closing.end()
                continue
        yield _StrayBrace(brace, position)
        position += 1


def greeting_problems(template: str, field: str) -> list[FieldViolation]:
    """Finds bad placeholders and braces on save, while the author can still fix them."""
    problems: list[FieldViolation] = []
    reported: set[str] = set()
    for token in _tokens(template):
        if isinstance(token, _Placeholder) and token.name not in PLACEHOLDERS:
            if token.name in reported:
                continue
            reported.add(token.name)
            name = token.name if len(token.name) <= 40 else token.name[:40] + "..."
            problems.append(
                FieldViolation(
                    field,
                    f"unknown placeholder {{{name}}}; use {{first_name}} or {{company_name}}",
                )
            )
        elif isinstance(token, _StrayBrace) and token.brace not in reported:
            reported.add(token.brace)
            problems.append(
                FieldViolation(
                    field,
                    f"unbalanced '{token.brace}' at character {token.position + 1}; "
                    f"write {token.brace * 2} for a literal brace",
                )
            )
    return problems


def _clean_value(value: object) -> str:
    if not isinstance(value, str):
        return ""
    kept = "".join(
        char
        for char in value
        if unicodedata.category(char) not in ("Cc", "Cs") and char not in _BIDI_CONTROLS
    )
    return kept.strip()[:MAX_VALUE].rstrip()


# A run of rendered text as (text, came from the template) pieces. Tidying a dropped
# placeholder only ever removes or changes template text, never a customer's value.
_Run = list[tuple[str, bool]]


def _strip_end(run: _Run, chars: str | None = None) -> str:
    """Removes trailing template ``chars`` (whitespace by default) and returns them."""
    removed = ""
    while run and run[-1][1]:
        text = run[-1][0]
        kept = text.rstrip(chars)
        removed = text[len(kept) :] + removed
        if kept:
            run[-1] = (kept, True)
            break
        run.pop()
    return removed


def _strip_start(run: _Run, chars: str | None = None) -> str:
    """Removes leading template ``chars`` (whitespace by default) and returns them."""
    removed = ""
    while run and run[0][1]:
        text = run[0][0]
        kept = text.lstrip(chars)
        removed += text[: len(text) - len(kept)]
        if kept:
            run[0] = (kept, True)
            break
        run.pop(0)
    return removed


def _close_gap(before: _Run, after: _Run) -> _Run:
    """Joins the text either side of a dropped placeholder so it reads as if never there."""
    space = _strip_end(before) + _strip_start(after)
    if not before:
        # The template started with the placeholder: "{first_name}, welcome" -> "Welcome".
        while _strip_start(after) + _strip_start(after, _PUNCTUATION):
            pass
        if after and after[0][1]:
            text = after[0][0]
            after[0] = (text[:1].upper() + text[1:], True)
        return after
    if not after:
        _strip_end(before, _SOFT_PUNCTUATION)
        return before
    if after[0][1] and after[0][0][0] in _PUNCTUATION:
        if before[-1][1] and before[-1][0][-1] in _SOFT_PUNCTUATION:
            # "Welcome back, {first_name}." -> "Welcome back."
            _strip_end(before, _SOFT_PUNCTUATION)
            return before + after
        if not (before[-1][1] and before[-1][0][-1] in _PUNCTUATION):
            # "Hi {first_name}!" -> "Hi!"
            return before + after
        # "Thanks. {first_name}! See you" -> "Thanks. See you": the sentence has ended.
        _strip_start(after, _PUNCTUATION)
        space += _strip_start(after)
        if not after:
            return before
    if not space:
        return before + after
    line_breaks = "".join(char for char in space if char in "\r\n")
    return [*before, (line_breaks or " ", True), *after]


def render_greeting(template: str, values: Mapping[str, str]) -> str:
    """The greeting a visitor sees; never raises, as a greeting that fails breaks the widget."""
    runs: list[_Run] = [[]]
    for token in _tokens(template):
        if isinstance(token, str):
            runs[-1].append((token, True))
        elif isinstance(token, _Placeholder):
            value = _clean_value(values.get(token.name)) if token.name in PLACEHOLDERS else ""
            if value:
                runs[-1].append((value, False))
            else:
                runs.append([])
        # A stray brace is dropped: template syntax never reaches the visitor.
    rendered = runs[0]
    for index, run in enumerate(runs[1:], start=1):
        is_blank = all(text.isspace() for text, _ in run)
        if is_blank and index < len(runs) - 1:
            # Only spaces between two dropped placeholders: "{first_name} {company_name}".
            continue
        rendered = _close_gap(rendered, [] if is_blank else run)
    return "".join(text for text, _ in rendered).strip()


# ---- validation ----------------------------------------------------------------------------


def persona_problems(persona: Persona) -> list[FieldViolation]:
    """Every problem with a persona at once, so one save reports them all."""
    return (
        resource_id_problems(persona.persona_id, "persona.persona_id")
        + _length_problems(persona.display_name, "persona.display_name", MAX_DISPLAY_NAME)
        + _length_problems(persona.greeting, "persona.greeting", MAX_GREETING)
        + greeting_problems(persona.greeting, "persona.greeting")
        + languages_problems(persona.languages, "persona.languages")
        + _length_problems(persona.guardrails, "persona.guardrails", MAX_GUARDRAILS)
    )


def _keywords_problems(keywords: Sequence[str], field: str) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    if len(keywords) > MAX_KEYWORDS:
        problems.append(FieldViolation(field, f"at most {MAX_KEYWORDS} keywords"))
    first_seen: dict[str, int] = {}
    for index, keyword in enumerate(keywords):
        where = f"{field}[{index}]"
        stripped = keyword.strip()
        if not 1 <= len(stripped) <= MAX_KEYWORD:
            problems.append(FieldViolation(where, f"must be 1-{MAX_KEYWORD} characters, not blank"))
            continue
        folded = stripped.casefold()
        if folded in first_seen:
            problems.append(
                FieldViolation(where, f"repeats keywords[{first_seen[folded]}] (ignoring case)")
            )
        first_seen.setdefault(folded, index)
    return problems


def escalation_problems(policy: EscalationPolicy) -> list[FieldViolation]:
    """Every problem with an escalation policy at once, so one save reports them all."""
    problems = resource_id_problems(policy.policy_id, "policy.policy_id")
    problems += _length_problems(policy.display_name, "policy.display_name", MAX_DISPLAY_NAME)
    if not 0 <= policy.max_bot_turns <= MAX_BOT_TURNS:
        problems.append(
            FieldViolation("policy.max_bot_turns", f"must be 0-{MAX_BOT_TURNS} (0 = no limit)")
        )
    problems += _range_problems(policy.min_sentiment, "policy.min_sentiment", -1, 1)
    problems += _range_problems(policy.min_confidence, "policy.min_confidence", 0, 1)
    problems += _keywords_problems(policy.keywords, "policy.keywords")
    problems += resource_id_problems(policy.queue_id, "policy.queue_id")
    if policy.handover_channel not in HANDOVER_CHANNELS:
        problems.append(FieldViolation("policy.handover_channel", "must be chat or email"))
    problems += _optional_id_problems(policy.sla_policy_id, "policy.sla_policy_id")
    problems += _optional_id_problems(
        policy.after_hours_sla_policy_id, "policy.after_hours_sla_policy_id"
    )
    return problems


def escalation_references(policy: EscalationPolicy) -> list[tuple[str, str, str]]:
    """Every (kind, id, field) the policy points at, for the existence check on save."""
    found = [("queue", policy.queue_id, "policy.queue_id")]
    if policy.sla_policy_id:
        found.append(("sla_policy", policy.sla_policy_id, "policy.sla_policy_id"))
    if policy.after_hours_sla_policy_id:
        found.append(
            ("sla_policy", policy.after_hours_sla_policy_id, "policy.after_hours_sla_policy_id")
        )
    return found


def policies_problems(policies: WidgetPolicies) -> list[FieldViolation]:
    """Every problem with the assignment document at once, so one save reports them all."""
    problems: list[FieldViolation] = []
    if len(policies.assignments) > MAX_ASSIGNMENTS:
        problems.append(
            FieldViolation("policies.assignments", f"at most {MAX_ASSIGNMENTS} assignments")
        )
    first_line: dict[str, int] = {}
    for index, assignment in enumerate(policies.assignments):
        where = f"policies.assignments[{index}]"
        problems += resource_id_problems(assignment.segment_id, f"{where}.segment_id")
        # One line per segment: with two, which part comes from which line would hang on
        # their order, and a reader of the list would miss it.
        if assignment.segment_id in first_line:
            problems.append(
                FieldViolation(
                    f"{where}.segment_id",
                    f"listed twice (first at assignments[{first_line[assignment.segment_id]}])",
                )
            )
        first_line.setdefault(assignment.segment_id, index)
        if not assignment.persona_id and not assignment.escalation_policy_id:
            problems.append(
                FieldViolation(where, "sets neither a persona nor an escalation policy")
            )
        problems += _optional_id_problems(assignment.persona_id, f"{where}.persona_id")
        problems += _optional_id_problems(
            assignment.escalation_policy_id, f"{where}.escalation_policy_id"
        )
    for field, value, what in (
        ("policies.default_persona_id", policies.default_persona_id, "persona"),
        (
            "policies.default_escalation_policy_id",
            policies.default_escalation_policy_id,
            "escalation policy",
        ),
    ):
        if value:
            problems += resource_id_problems(value, field)
        else:
            problems.append(
                FieldViolation(
                    field, f"required: the {what} for visitors and customers no line matches"
                )
            )
    return problems


def policies_references(policies: WidgetPolicies) -> list[tuple[str, str, str]]:
    """Every (kind, id, field) the document points at, for the existence check on save."""
    found: list[tuple[str, str, str]] = []
    for index, assignment in enumerate(policies.assignments):
        where = f"policies.assignments[{index}]"
        found.append(("segment", assignment.segment_id, f"{where}.segment_id"))
        if assignment.persona_id:
            found.append(("persona", assignment.persona_id, f"{where}.persona_id"))
        if assignment.escalation_policy_id:
            found.append(
                (
                    "escalation_policy",
                    assignment.escalation_policy_id,
                    f"{where}.escalation_policy_id",
                )
            )
    if policies.default_persona_id:
        found.append(("persona", policies.default_persona_id, "policies.default_persona_id"))
    if policies.default_escalation_policy_id:
        found.append(
            (
                "escalation_policy",
                policies.default_escalation_policy_id,
                "policies.default_escalation_policy_id",
            )
        )
    return found


def bot_turn_problems(turn: BotTurn) -> list[FieldViolation]:
    """Refuses a turn the escalation check could misread, such as a sentiment of 5."""
    problems: list[FieldViolation] = []
    if not 0 <= turn.turn_count <= MAX_TURN_COUNT:
        problems.append(FieldViolation("turn.turn_count", f"must be 0-{MAX_TURN_COUNT}"))
    problems += _range_problems(turn.sentiment, "turn.sentiment", -1, 1)
    problems += _range_problems(turn.confidence, "turn.confidence", 0, 1)
    problems += _length_problems(turn.message, "turn.message", MAX_MESSAGE)
    return problems


# ---- choosing ------------------------------------------------------------------------------


def choose(policies: WidgetPolicies, segment_ids: frozenset[str]) -> Choice:
    """Each part from the first line that sets it, so an overlay line can change just one part."""
    persona_id, persona_segment_id = policies.default_persona_id, ""
    escalation_id, escalation_segment_id = policies.default_escalation_policy_id, ""
    persona_found = escalation_found = False
    for assignment in policies.assignments:
        if assignment.segment_id not in segment_ids:
            continue
        if assignment.persona_id and not persona_found:
            persona_id, persona_segment_id = assignment.persona_id, assignment.segment_id
            persona_found = True
        if assignment.escalation_policy_id and not escalation_found:
            escalation_id = assignment.escalation_policy_id
            escalation_segment_id = assignment.segment_id
            escalation_found = True
        if persona_found and escalation_found:
            break
    return Choice(persona_id, escalation_id, persona_segment_id, escalation_segment_id)


# ---- escalation ----------------------------------------------------------------------------


# A keyword trie: each character leads to the rest; the key "" marks where a keyword ends.
_Trie = dict[str, "_Trie"]


@dataclass(frozen=True)
class _KeywordMatcher:
    pattern: re.Pattern[str]
    index_by_phrase: Mapping[str, int]


def _phrase(text: str) -> str:
    return " ".join(text.split())


def _trie_pattern(node: _Trie) -> str:
    branches = [
        # Any whitespace between a phrase's words, so a line break does not hide it.
        (r"\s+" if char == " " else re.escape(char)) + _trie_pattern(child)
        for char, child in sorted(node.items())
        if char
    ]
    if not branches:
        return ""
    pattern = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
    # Greedy: where "cancel" and "cancel my plan" both match, the phrase is named.
    return f"(?:{pattern})?" if "" in node else pattern


@functools.lru_cache(maxsize=1024)
def _keyword_matcher(keywords: tuple[str, ...]) -> _KeywordMatcher | None:
    """One regex for a policy's keywords, shaped as a trie: fifty plain alternatives tried at
    every word of a long message cost about fifteen times as much."""
    index_by_phrase: dict[str, int] = {}
    for index, keyword in enumerate(keywords):
        phrase = _phrase(keyword.casefold())
        if phrase:
            index_by_phrase.setdefault(phrase, index)
    if not index_by_phrase:
        return None
    trie: _Trie = {}
    for phrase in index_by_phrase:
        node = trie
        for char in phrase:
            node = node.setdefault(char, {})
        node[""] = {}
    # Lookarounds rather than \b, so that keywords such as "c++" have boundaries too.
    pattern = re.compile(rf"(?<!\w){_trie_pattern(trie)}(?!\w)")
    return _KeywordMatcher(pattern, index_by_phrase)


def _keywords_written(keywords: tuple[str, ...], message: str) -> list[str]:
    matcher = _keyword_matcher(keywords)
    if matcher is None or not message:
        return []
    found = {
        matcher.index_by_phrase[_phrase(match.group())]
        for match in matcher.pattern.finditer(message.casefold())
    }
    return [keywords[index].strip() for index in sorted(found)]


def _quoted(keywords: list[str]) -> str:
    quoted = [f"'{keyword}'" for keyword in keywords]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _below(what: str, value: float | None, threshold: float | None) -> str:
    if value is None or threshold is None or not value < threshold:
        return ""
    return f"{what} {value:g} is below {threshold:g}"


def evaluate_escalation(policy: EscalationPolicy, turn: BotTurn) -> Verdict:
    """Whether the bot hands over now, naming every trigger so whoever takes over sees why."""
    written = _keywords_written(policy.keywords, turn.message)
    over_limit = 0 < policy.max_bot_turns <= turn.turn_count
    # In HandoverReason's order; an empty explanation means the trigger did not fire.
    checks = [
        (
            HandoverReason.IMMEDIATE,
            "the policy hands over immediately" if policy.immediately else "",
        ),
        (
            HandoverReason.BOT_TURNS,
            f"the bot took {_counted(turn.turn_count, 'turn')} without resolving it "
            f"(the limit is {policy.max_bot_turns})"
            if over_limit
            else "",
        ),
        (
            HandoverReason.LOW_SENTIMENT,
            _below("the visitor's sentiment", turn.sentiment, policy.min_sentiment),
        ),
        (
            HandoverReason.LOW_CONFIDENCE,
            _below("the bot's confidence", turn.confidence, policy.min_confidence),
        ),
        (HandoverReason.KEYWORD, f"the visitor wrote {_quoted(written)}" if written else ""),
        (
            HandoverReason.ASKED_FOR_HUMAN,
            "the visitor asked for a human"
            if policy.on_human_request and turn.asked_for_human
            else "",
        ),
    ]
    fired = [(reason, words) for reason, words in checks if words]
    if not fired:
        return Verdict(hand_over=False, reasons=(), explanation="no trigger fired")
    return Verdict(
        hand_over=True,
        reasons=tuple(reason for reason, _ in fired),
        explanation="; ".join(words for _, words in fired),
    )


# ---- what the visitor is offered and promised ---------------------------------------------


def _goes_after_hours(policy: EscalationPolicy, queue_open: bool) -> bool:
    # Email waits in the queue whatever the hours; only a live chat needs someone there now.
    return policy.handover_channel != Channel.EMAIL and not queue_open


def handover_offer(policy: EscalationPolicy, queue_open: bool) -> Offer:
    """Where a handover goes now: live chat needs someone in the queue, email does not."""
    if policy.handover_channel == Channel.EMAIL:
        return Offer.EMAIL
    if _goes_after_hours(policy, queue_open):
        return Offer(policy.after_hours.value)
    return Offer.LIVE_CHAT


def offer(policy: EscalationPolicy, queue_open: bool) -> Offer:
    """What the widget offers first: the handover itself when the policy skips the bot."""
    return handover_offer(policy, queue_open) if policy.immediately else Offer.BOT_FIRST


def promised_target(policy: EscalationPolicy, queue_open: bool) -> str:
    """The SLA policy id to promise now ("" = none), so the visitor hears what the team owes."""
    if _goes_after_hours(policy, queue_open):
        return policy.after_hours_sla_policy_id or policy.sla_policy_id
    return policy.sla_policy_id


def _duration_words(duration: timedelta, business_hours: bool) -> str:
    """Rounded up to the minute, so the words never promise more than the SLA behind them."""
    minutes = max(1, math.ceil(duration.total_seconds() / 60))
    if minutes < 60:
        return _counted(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    words = _counted(hours, "business hour" if business_hours else "hour")
    return f"{words} {_counted(minutes, 'minute')}" if minutes else words


_WITHIN = {
    Offer.LIVE_CHAT: "a specialist usually replies within {}",
    Offer.EMAIL: "we will email you within {}",
    Offer.CALLBACK: "we will call you back within {}",
}
_AS_SOON_AS_POSSIBLE = {
    Offer.LIVE_CHAT: "a specialist will reply as soon as they can",
    Offer.EMAIL: "we will email you as soon as we can",
    Offer.CALLBACK: "we will call you back as soon as we can",
}


def expectation(
    offer_now: Offer, handover: Offer, target: SlaTarget | None, business_hours: bool
) -> str:
    """What happens next and how soon, in lowercase so the caller can embed or capitalise it."""
    if handover not in _WITHIN:
        raise ValueError(f"a handover goes to people, not {handover.value}")
    if target is None:
        sentence = _AS_SOON_AS_POSSIBLE[handover]
    else:
        sentence = _WITHIN[handover].format(_duration_words(target.duration, business_hours))
    if offer_now == Offer.BOT_FIRST:
        return f"our assistant answers right away; if you need more, {sentence}"
    return sentence
