"""Reply parsing: the pathological shapes language models answer in."""

import pytest

from discovery.parsing import ReplyError, parse_reply, slug

CODE = "def steep(rho, beta):\n    return -F.logsigmoid(2 * beta * rho)\n"
JSON = '{"thought": "steeper logistic", "name": "steep_dpo", "code": "def steep(rho, beta):\\n    return -F.logsigmoid(2 * beta * rho)\\n"}'


def test_bare_json_object():
    p = parse_reply(JSON)
    assert (p.thought, p.name, p.code) == ("steeper logistic", "steep_dpo", CODE)


def test_json_in_a_markdown_fence_with_text_around_it():
    p = parse_reply(f"Here is my idea.\n\n```json\n{JSON}\n```\nHope it helps!")
    assert p.code == CODE and p.name == "steep_dpo"


def test_json_with_text_around_it_and_no_fence():
    assert parse_reply(f"Sure! {JSON} Let me know.").code == CODE


def test_raw_newlines_inside_the_code_string():
    text = '{"thought": "t", "name": "n", "code": "' + CODE.rstrip("\n") + '"}'
    assert parse_reply(text).code == CODE


def test_code_in_a_separate_python_block():
    text = f'```json\n{{"thought": "steeper", "name": "steep"}}\n```\n\n```python\n{CODE}```'
    p = parse_reply(text)
    assert (p.thought, p.name, p.code) == ("steeper", "steep", CODE)


def test_only_a_python_block_takes_name_from_def_and_thought_from_prose():
    p = parse_reply(f"I make the logistic loss steeper.\n```python\n{CODE}```\n")
    assert p.name == "steep" and p.code == CODE and "steeper" in p.thought


def test_code_value_itself_wrapped_in_a_fence():
    text = '{"thought": "t", "name": "n", "code": "```python\\n' + CODE.replace("\n", "\\n") + '```"}'
    assert parse_reply(text).code == CODE


def test_malformed_json_says_so():
    with pytest.raises(ReplyError, match="no valid JSON"):
        parse_reply('{"thought": "t", "name": "n", "code": "def f(rho, beta): return rho",}')


def test_json_without_code_says_so():
    with pytest.raises(ReplyError, match='no "code"'):
        parse_reply('{"thought": "only a thought", "name": "x"}')


def test_code_without_a_function_says_so():
    with pytest.raises(ReplyError, match="defines no function"):
        parse_reply('{"thought": "t", "name": "x", "code": "return rho"}')


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_reply(text):
    with pytest.raises(ReplyError, match="empty"):
        parse_reply(text)


def test_prose_only():
    with pytest.raises(ReplyError, match="no JSON object"):
        parse_reply("I think we should use a hinge loss.")


def test_slug_is_safe_for_files_and_short():
    assert slug("My Loss: v2!") == "my_loss_v2"
    assert slug("../../etc/passwd") == "etc_passwd"
    assert slug("2nd") == "candidate_2nd"
    assert len(slug("x" * 200)) == 40
