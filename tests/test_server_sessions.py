"""Server sessions: requests naming ``recursa.session`` continue in one REPL."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from recursa.server.chat import parse_chat_request
from recursa.server.config import ServerConfig
from recursa.server.errors import RequestError

from .test_server import LiveServer, user, wait_until, write_script

FIRST = "```repl\nwords = context.split()\nFINAL(len(words))\n```"
LATER = (
    "```repl\nextra = [v for k, v in globals().items() if k.startswith('context_')"
    " and k != 'context_0']\n"
    "FINAL(f'{len(words)} words, {len(history)} earlier, extra={extra}')\n```"
)
SLOW = "```repl\nimport time\ntime.sleep(3)\nFINAL('slow')\n```"


@pytest.fixture
def session_model(tmp_path) -> str:
    return write_script(
        tmp_path,
        "sess",
        rules=[
            {"match": "slow please", "reply": SLOW},
            {"match": "question 1 of a session", "reply": FIRST},
        ],
        default=LATER,
    )


def ask(client, text: str, session: str | None, model: str = "rlm", **extra):
    body = {"recursa": {"session": session}} if session else {}
    return client.chat.completions.create(
        model=model, messages=[user(text)], extra_body=body, **extra
    )


def test_questions_of_one_session_share_the_repl(tmp_path, session_model):
    with LiveServer(ServerConfig(model=session_model, runs_dir=tmp_path / "runs")) as srv:
        c = srv.client()
        first = ask(c, "one two three", "s-1")
        assert first.choices[0].message.content == "3"
        again = ask(c, "and now?", "s-1")
        assert again.choices[0].message.content == "3 words, 1 earlier, extra=[]"
        # Attachments of a later message become one more context.
        msg = {
            "role": "user",
            "content": [
                {"type": "text", "text": "attached notes"},
                {"type": "text", "text": "what was attached?"},
            ],
        }
        third = c.chat.completions.create(
            model="rlm", messages=[msg], extra_body={"recursa": {"session": "s-1"}}
        )
        assert third.choices[0].message.content == "3 words, 2 earlier, extra=['attached notes']"
        # Another session, or none, is a REPL of its own.
        assert ask(c, "four five six seven", "s-2").choices[0].message.content == "4"
        summary = srv.summary(third.model_extra["recursa"]["run_id"])
        assert summary["session"] == "s-1"


def test_a_busy_session_is_409_and_another_model_is_400(tmp_path, session_model):
    config = ServerConfig(model=session_model, aliases={"other": session_model})
    with LiveServer(config) as srv:
        c = srv.client()
        ask(c, "start here", "busy")
        slow = threading.Thread(target=ask, args=(c, "slow please", "busy"))
        slow.start()
        wait_until(lambda: srv.app.state.manager.sessions.get("busy").busy, "the slow question")
        try:
            with pytest.raises(Exception) as err:
                ask(c, "meanwhile?", "busy")
            assert getattr(err.value, "status_code", None) == 409
        finally:
            slow.join(30)
        with pytest.raises(Exception) as err:
            ask(c, "with another model", "busy", model="other")
        assert getattr(err.value, "status_code", None) == 400
        assert "started with model" in str(err.value)


def test_sessions_expire_and_are_capped(tmp_path, session_model):
    config = ServerConfig(model=session_model, max_sessions=2, session_idle_s=0.5)
    with LiveServer(config) as srv:
        c = srv.client()
        pool = srv.app.state.manager.sessions
        ask(c, "a b", "x1")
        ask(c, "a b c", "x2")
        ask(c, "a b c d", "x3")  # full: the one idle longest (x1) was closed
        assert sorted(pool.entries) == ["x2", "x3"]
        deadline = time.monotonic() + 10
        while pool.entries and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.entries == {}
        # An expired session starts afresh: question 1 again.
        assert ask(c, "one two", "x2").choices[0].message.content == "2"


@pytest.mark.parametrize("bad", ["", "../etc", "a" * 200, 7, "white space"])
def test_bad_session_ids_are_400(bad):
    body = {"model": "rlm", "messages": [user("q")], "recursa": {"session": bad}}
    with pytest.raises(RequestError) as err:
        parse_chat_request(json.loads(json.dumps(body)))
    assert err.value.param == "recursa.session"
