"""Greetings as a visitor sees them: filled in, or tidy when a value is missing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.widgets.logic import greeting_problems, render_greeting

ANN = {"first_name": "Ann", "company_name": "Acme"}


@pytest.mark.parametrize(
    ("template", "greeting"),
    [
        ("Hi {first_name}, how can we help?", "Hi, how can we help?"),
        ("Hi {first_name}!", "Hi!"),
        ("Welcome back, {first_name}.", "Welcome back."),
        ("{first_name}, welcome", "Welcome"),
        ("Hi {first_name}", "Hi"),
        ("Thanks, {first_name}", "Thanks"),
        ("Hi {first_name} there", "Hi there"),
        ("Hi, {first_name}, welcome", "Hi, welcome"),
        ("Thanks. {first_name}! See you soon", "Thanks. See you soon"),
        ("{first_name} {company_name}, welcome", "Welcome"),
        ("Hi {first_name}\nHow can we help?", "Hi\nHow can we help?"),
    ],
)
def test_missing_first_name_leaves_a_tidy_greeting(template: str, greeting: str) -> None:
    assert render_greeting(template, {}) == greeting


def test_blank_values_count_as_missing() -> None:
    assert render_greeting("Hi {first_name}!", {"first_name": "  \t "}) == "Hi!"
    assert render_greeting("Hi {first_name}!", {"first_name": "\x00\x07"}) == "Hi!"


def test_present_values_are_filled_in_as_written() -> None:
    template = "Hi {first_name}, welcome to {company_name}!"
    assert render_greeting(template, ANN) == "Hi Ann, welcome to Acme!"


def test_values_lose_control_characters_and_surrounding_space() -> None:
    values = {"first_name": "  An\x00n\n", "company_name": "Ac\u202eme"}
    assert render_greeting("Hi {first_name} of {company_name}", values) == "Hi Ann of Acme"


def test_long_values_are_cut_to_100_characters() -> None:
    assert render_greeting("{first_name}", {"first_name": "x" * 500}) == "x" * 100


def test_capitalising_after_a_dropped_opening_leaves_customer_values_alone() -> None:
    values = {"company_name": "eBay"}
    assert render_greeting("{first_name} {company_name} welcomes you", values) == (
        "eBay welcomes you"
    )


def test_unknown_placeholders_render_as_if_missing() -> None:
    assert render_greeting("Hi {plan} user!", {"plan": "Pro"}) == "Hi user!"


def test_doubled_braces_are_literal_braces() -> None:
    assert render_greeting("{{first_name}} is {first_name}", ANN) == "{first_name} is Ann"
    assert render_greeting("{{{first_name}}}", ANN) == "{Ann}"


def test_stray_braces_in_a_broken_template_are_not_shown() -> None:
    assert render_greeting("Hi {first_name!", ANN) == "Hi first_name!"
    assert render_greeting("Hi} there", ANN) == "Hi there"


# ---- properties -----------------------------------------------------------------------------

PIECES = st.sampled_from(
    ["{first_name}", "{company_name}", "{plan}", "{", "}", "{{", "}}", "{}", " ", ", ", "!"]
)
TEMPLATES = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("{}first_name ,.!?\n")),
    st.lists(st.one_of(PIECES, st.text(max_size=4))).map("".join),
)
VALUES = st.dictionaries(
    st.one_of(st.sampled_from(["first_name", "company_name", "plan"]), st.text()), st.text()
)


@given(TEMPLATES, VALUES)
def test_any_greeting_renders_without_error_or_a_leftover_placeholder(
    template: str, values: dict[str, str]
) -> None:
    greeting = render_greeting(template, values)
    # Braces reach the visitor only when asked for: "{{" in the template, or a customer's value.
    if "{{" not in template and not any("{" in value for value in values.values()):
        assert "{first_name}" not in greeting
        assert "{" not in greeting


WORDS = st.sampled_from(["Hi", "hello", "welcome", "to", "we", "help", "you"])
NAMES = st.sampled_from(["Ann", "Zoë", "", "   ", "\x00"])


@st.composite
def clean_templates(draw: st.DrawFn) -> str:
    """Templates as an author writes them: single spaces, punctuation right after a word."""
    tokens = draw(
        st.lists(
            st.tuples(
                st.one_of(WORDS, st.sampled_from(["{first_name}", "{company_name}"])),
                st.sampled_from(["", "", ",", ".", "!", "?"]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return " ".join(word + mark for word, mark in tokens)


@given(clean_templates(), NAMES, NAMES)
def test_dropping_values_never_leaves_stray_spaces_or_punctuation(
    template: str, first_name: str, company_name: str
) -> None:
    greeting = render_greeting(template, {"first_name": first_name, "company_name": company_name})
    assert "  " not in greeting
    assert not re.search(r"\s[,.!?]", greeting)
    assert not re.search(r"[,.!?]\s*[,.!?]", greeting)
    assert not greeting.startswith((",", ".", "!", "?"))
    assert greeting == greeting.strip()


@given(clean_templates(), st.sampled_from(["Ann", "Zoë"]), st.sampled_from(["Acme", "eBay"]))
def test_with_every_value_present_the_greeting_is_exactly_the_template(
    template: str, first_name: str, company_name: str
) -> None:
    values = {"first_name": first_name, "company_name": company_name}
    assert render_greeting(template, values) == template.format(**values)


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "",
        "Hi {first_name}, welcome to {company_name}!",
        "Use {{braces}} freely",
        "{{{first_name}}}",
    ],
)
def test_well_formed_greetings_are_accepted(template: str) -> None:
    assert greeting_problems(template, "persona.greeting") == []


def test_an_unknown_placeholder_is_named_with_the_ones_to_use() -> None:
    (problem,) = greeting_problems("Hi {first_name} on {plan} and {plan}", "persona.greeting")
    assert problem.field == "persona.greeting"
    assert problem.description == "unknown placeholder {plan}; use {first_name} or {company_name}"


@pytest.mark.parametrize(
    ("template", "description"),
    [
        ("Hi {first_name", "unbalanced '{' at character 4; write {{ for a literal brace"),
        ("Hi first_name}", "unbalanced '}' at character 14; write }} for a literal brace"),
        ("{{first_name}", "unbalanced '}' at character 13; write }} for a literal brace"),
    ],
)
def test_an_unbalanced_brace_is_pointed_at(template: str, description: str) -> None:
    assert [p.description for p in greeting_problems(template, "g")] == [description]


def test_a_greeting_can_show_several_problems_at_once() -> None:
    problems = greeting_problems("{ first_name } } {", "g")
    assert [p.description.split(";")[0] for p in problems] == [
        "unknown placeholder { first_name }",
        "unbalanced '}' at character 16",
        "unbalanced '{' at character 18",
    ]
