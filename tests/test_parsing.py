from recursa.parsing import find_code_blocks, find_final, strip_code_blocks


def test_repl_and_python_blocks_run_in_order_other_languages_do_not():
    text = (
        "Plan.\n```repl\nx = 1\n```\nthen\n```python\nprint(x)\n```\n"
        '```json\n{"a": 1}\n```\n```py\ny = 2\n```'
    )
    assert find_code_blocks(text) == ["x = 1", "print(x)", "y = 2"]


def test_a_fence_with_another_language_does_not_swallow_the_next_block():
    text = "```json\n{}\n```\n  ```repl\n  y = 2\n  print(y)\n  ```\n"
    assert find_code_blocks(text) == ["y = 2\nprint(y)"]


def test_unclosed_block_at_the_end_is_taken_whole():
    assert find_code_blocks("```repl\nprint(1)\nprint(2)") == ["print(1)\nprint(2)"]


def test_empty_blocks_are_ignored():
    assert find_code_blocks("```repl\n\n```") == []


def test_final_outside_code_with_literal_and_nested_parentheses():
    f = find_final('I checked.\n**FINAL("Paris (France)")**')
    assert f is not None
    assert f.kind == "FINAL"
    assert f.text() == "Paris (France)"


def test_final_with_apostrophe_in_prose_is_not_read_as_a_string():
    f = find_final("FINAL(It's 42 (roughly))")
    assert f is not None
    assert f.text() == "It's 42 (roughly)"


def test_final_with_parenthesis_inside_quotes():
    f = find_final('FINAL("a ) b")')
    assert f is not None
    assert f.text() == "a ) b"


def test_multiline_final():
    f = find_final('FINAL("""first line\nsecond (line)""")')
    assert f is not None
    assert f.text() == "first line\nsecond (line)"


def test_final_var_names_a_variable():
    assert find_final('FINAL_VAR("result")').name() == "result"
    assert find_final("FINAL_VAR(result)").name() == "result"
    assert find_final("FINAL(result)").name() == "result"
    assert find_final("FINAL(42)").name() is None


def test_final_inside_code_blocks_is_left_to_the_repl():
    assert find_final("```repl\nFINAL(1)\n```\n") is None
    assert strip_code_blocks("a\n```repl\nFINAL(1)\n```\nb").split() == ["a", "b"]


def test_final_mentioned_mid_sentence_is_not_an_answer():
    assert find_final("I will call FINAL(answer) when I know it.") is None


def test_last_final_wins_and_unclosed_final_takes_the_rest():
    assert find_final("FINAL(1)\nFINAL(2)").text() == "2"
    assert find_final("FINAL(no closing paren").text() == "no closing paren"
