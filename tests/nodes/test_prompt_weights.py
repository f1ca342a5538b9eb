r"""The weighting syntax: A1111's documented examples, tolerance, errors, and properties.

The expected weights are written out from the syntax as A1111 documents it
(``modules/prompt_parser.py``, ``parse_prompt_attention``): (x) x1.1, [x] /1.1, (x:w) xw, nested
factors multiply, \( \) \[ \] \\ literal, unbalanced brackets tolerated.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nodes.prompt_weights import (
    PromptSyntaxError,
    Segment,
    format_prompt,
    parse_prompt,
    plain_text,
)


def flat(text: str) -> list[tuple[str, float]]:
    """The one section's segments, as (text, weight) pairs."""
    sections = parse_prompt(text)
    assert len(sections) == 1
    return [(s.text, s.weight) for s in sections[0]]


def assert_segments(text: str, expected: list[tuple[str, float]]) -> None:
    got = flat(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_plain_text_is_one_segment_of_weight_one() -> None:
    assert parse_prompt("normal text") == [[Segment("normal text", 1.0)]]
    assert plain_text(parse_prompt("normal text")) == "normal text"
    assert parse_prompt("") == [[]]
    assert plain_text(parse_prompt("")) == ""


@pytest.mark.parametrize(
    "text, expected",
    [  # A1111's own docstring examples
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.3 * 1.1 * 1.1),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.1**4),
                (".", 1.1),
            ],
        ),
    ],
)
def test_a1111_documented_examples(text, expected) -> None:
    assert_segments(text, expected)


def test_an_explicit_weight_weights_every_token_of_its_span() -> None:
    assert flat("(a red circle:1.3)") == [("a red circle", 1.3)]
    assert flat("on (a red circle:0.5) now") == [("on ", 1.0), ("a red circle", 0.5), (" now", 1.0)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(a)", [("a", 1.1)]),
        ("[a]", [("a", 1 / 1.1)]),
        ("((a))", [("a", 1.1 * 1.1)]),
        ("[[a]]", [("a", 1 / 1.1 / 1.1)]),
        ("((a:1.3))", [("a", 1.3 * 1.1)]),  # nested factors multiply (ComfyUI: absolute)
        ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 1.0), (" c", 0.5)]),
        ("(a:-1)", [("a", -1.0)]),
        ("(a:0)", [("a", 0.0)]),
        ("(a: 1.5 )", [("a", 1.5)]),  # spaces around the number, as ComfyUI reads them
        ("(a:.5)(b:2.)", [("a", 0.5), ("b", 2.0)]),
        ("(a:b)", [("a:b", 1.1)]),  # no number: the colon is text
        ("(10:30 pm)", [("10:30 pm", 1.1)]),
        ("a:1.5)", [("a:1.5)", 1.0)]),  # nothing open: literal
    ],
)
def test_weights_and_nesting(text, expected) -> None:
    assert_segments(text, expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\(a\) \[b\] c\\d", [("(a) [b] c\\d", 1.0)]),
        (r"a\b", [("a\\b", 1.0)]),  # a backslash before anything else is itself
        ("a\\", [("a\\", 1.0)]),
        (r"(\(x\):1.2)", [("(x)", 1.2)]),
        (r"\(x:1.2\)", [("(x:1.2)", 1.0)]),
    ],
)
def test_escapes_are_literal_characters(text, expected) -> None:
    assert_segments(text, expected)


@pytest.mark.parametrize(
    "text, expected",
    [  # tolerated as A1111 tolerates them
        ("a) b", [("a) b", 1.0)]),  # a closer with nothing open is a character
        ("a] b", [("a] b", 1.0)]),
        ("(a] b", [("a] b", 1.1)]),  # ... also inside the other kind of bracket
        ("[a) b", [("a) b", 1 / 1.1)]),
        ("x (a [b", [("x ", 1.0), ("a ", 1.1), ("b", 1.1 / 1.1)]),  # left open: to the end
        ("x (a:1.3", [("x ", 1.0), ("a:1.3", 1.1)]),
    ],
)
def test_unbalanced_brackets_are_tolerated(text, expected) -> None:
    assert_segments(text, expected)


@pytest.mark.parametrize(
    "text, position, words",
    [
        ("(a [b) c]", 5, "close brackets in order"),
        ("x [a (b] c)", 7, "close brackets in order"),
        ("[(a:1.2]", 7, "close brackets in order"),
        ("a [cat:dog:0.5] b", 2, "prompt editing"),
        ("[cat:0.25]", 0, "prompt editing"),
        ("(a:1.2.3)", 3, "not a number"),
        ("(a:.)", 3, "not a number"),
        ("(a:" + "9" * 400 + ")", 3, "too large"),
        ("((((a:17" + "0" * 307 + "))))", 6 + 309 + 1, "infinity"),
    ],
)
def test_what_has_no_single_reading_is_an_error_naming_the_character(text, position, words):
    with pytest.raises(PromptSyntaxError) as caught:
        parse_prompt(text)
    assert caught.value.position == position
    assert f"character {position + 1}:" in str(caught.value)
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "text, sections",
    [
        ("a BREAK b", [["a"], ["b"]]),
        ("a  BREAK\nb", [["a"], ["b"]]),
        ("a BREAK", [["a"], []]),  # no chunk is added after a trailing BREAK (see token_chunks)
        ("BREAK a", [[], ["a"]]),
        ("a BREAK BREAK b", [["a"], [], ["b"]]),
        ("aBREAK b", [["aBREAK b"]]),
        ("a break b", [["a break b"]]),
        ("(a BREAK b:1.2)", [[("a", 1.2)], [("b", 1.2)]]),
        ("(a )BREAK( b)", [[("a", 1.1)], [("b", 1.1)]]),  # spaces at a BREAK make no tokens
    ],
)
def test_break_splits_the_prompt_into_sections(text, sections) -> None:
    got = parse_prompt(text)
    expected = [
        [Segment(*s) if isinstance(s, tuple) else Segment(s, 1.0) for s in section]
        for section in sections
    ]
    assert got == expected


def test_format_writes_weights_that_read_back_exactly() -> None:
    sections = parse_prompt("a (((house:1.3)) [on] BREAK (tiny:0.00001) \\(x\\)")
    written = format_prompt(sections)
    assert "e-" not in written  # exponents are not part of the syntax
    assert parse_prompt(written) == sections


def bits(sections: list[list[Segment]]) -> list[list[tuple[str, str]]]:
    """Sections with each weight as its exact float bits."""
    return [[(s.text, s.weight.hex()) for s in section] for section in sections]


PIECES = [
    "(", ")", "[", "]", "\\", "\\(", "\\)", "\\[", "\\]", "\\\\", ":", ":1.5)", ": 0.5 )",
    ":-2)", ":0)", ":.)", ":1.2.3)", ":0.5]", "BREAK", " BREAK ", "a", "b c", " ", "\n", "1.2",
    "é", "|",
]  # fmt: skip
prompts = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
    st.text(alphabet="()[]\\:.-+019 aBREAK\t", max_size=40),
    st.text(max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(prompts)
@example("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
@example("(a )BREAK  BREAK( b)")
@example("BRE()AK")
def test_any_string_parses_or_raises_a_positioned_error(text: str) -> None:
    try:
        sections = parse_prompt(text)
    except PromptSyntaxError as error:
        assert 0 <= error.position < len(text)
        assert f"character {error.position + 1}:" in str(error)
        return
    assert sections and all(isinstance(s, Segment) for section in sections for s in section)
    assert all(s.text for section in sections for s in section)


@settings(max_examples=400, deadline=None)
@given(prompts)
@example("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
@example("(a )BREAK  BREAK( b)")
@example("BRE()AK")
def test_formatted_sections_parse_back_to_the_same_texts_and_weights(text: str) -> None:
    try:
        sections = parse_prompt(text)
    except PromptSyntaxError:
        return
    assert bits(parse_prompt(format_prompt(sections))) == bits(sections)


weights = st.one_of(
    st.sampled_from([1.0, 1.1, 1 / 1.1, 0.0, -0.0, -1.5]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30),
)
texts = st.text(alphabet=st.characters(blacklist_characters="K"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(texts, weights), max_size=8))
def test_any_weights_round_trip_through_the_text(pairs: list[tuple[str, float]]) -> None:
    # What parsing keeps of them: equal neighbours merge (no 'K', so no BREAK can form).
    expected: list[list] = []
    for text, weight in pairs:
        if expected and expected[-1][1] == weight:
            expected[-1][0] += text
        else:
            expected.append([text, weight])
    section = [Segment(text, weight) for text, weight in expected]
    assert bits(parse_prompt(format_prompt([section]))) == bits([section])


@given(st.text(alphabet=st.characters(blacklist_characters="()[]\\K"), max_size=40))
def test_text_without_syntax_is_itself(text: str) -> None:
    assert plain_text(parse_prompt(text)) == text
