"""fpush against real Prosody 0.12 and ejabberd 23.01 with real clients (issue 5's scenarios).

Each test runs once per server. A fresh user enables push with a token whose prefix tells the
fake provider how to answer; the wiretap shows the push IQs the server sent and fpush's replies,
the fake providers show what reached APNS/FCM.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import RATELIMIT_WINDOW, Stack
from processes import wait_for
from providers import header
from servers import PUSH_MAX_ERRORS


def fcm_message(record: dict) -> dict:
    body = record.get("body")
    if isinstance(body, str):
        body = json.loads(body)
    return body["message"]


def assert_result(push, stack: Stack) -> None:
    assert push.reply is not None and push.reply.kind == "result", f"{push.describe()}\n{stack.wiretap.summary()}"


def assert_error(push, error_type: str, condition: str, stack: Stack) -> None:
    reply = push.reply
    assert reply is not None and reply.kind == "error", f"{push.describe()}\n{stack.wiretap.summary()}"
    assert (reply.error_type, reply.condition) == (error_type, condition), push.describe()


# 1. An offline message reaches the provider once, with the right token and topic.


def test_offline_message_reaches_apns_with_token_and_topic(stack: Stack):
    user, token = stack.registered_user_with_push("ok", "apns", "apns")

    push = stack.message_and_reply(user, token, 1)

    assert_result(push, stack)
    assert push.push_module == "apns"
    [request] = stack.providers["apns"].requests(token)
    assert request["status"] == 200
    assert header(request, "apns-topic") == stack.providers["apns"].info["topic"]
    assert header(request, "apns-push-type") in ("alert", "background")


def test_offline_message_reaches_apns_with_key_based_auth(stack: Stack):
    user, token = stack.registered_user_with_push("ok", "apns", "apns-key")

    push = stack.message_and_reply(user, token, 1)

    assert_result(push, stack)
    [request] = stack.providers["apns"].requests(token)
    assert request["status"] == 200
    authorization = header(request, "authorization") or ""
    assert authorization.lower().startswith("bearer "), request


def test_offline_message_reaches_fcm_with_token(stack: Stack):
    user, token = stack.registered_user_with_push("ok", "fcm", "fcm")

    push = stack.message_and_reply(user, token, 1)

    assert_result(push, stack)
    [request] = stack.providers["fcm"].requests(token)
    assert request["status"] == 200
    message = fcm_message(request)
    assert message["token"] == token
    assert message["android"]["priority"].lower() == "high"


def test_dropped_stream_management_session_is_pushed_to(stack: Stack):
    # The client loses its TCP connection without closing the stream: the server keeps the
    # session resumable and pushes for what arrives meanwhile.
    user, token = stack.registered_user_with_push("ok", "apns", "apns", then="drop")

    push = stack.message_and_reply(user, token, 1)

    assert_result(push, stack)
    assert len(stack.providers["apns"].requests(token)) == 1


# 2. A dead token: fpush answers cancel, the server drops the registration, no more pushes.


@pytest.mark.parametrize("platform", ["apns", "fcm"])
def test_dead_token_is_cancelled_and_registration_removed(stack: Stack, platform: str):
    user, token = stack.registered_user_with_push("dead", platform, platform)
    # ejabberd drops a registration on the first cancel, Prosody after push_max_errors in a row.
    cancels_needed = 1 if stack.kind == "ejabberd" else PUSH_MAX_ERRORS

    for count in range(1, cancels_needed + 1):
        assert not stack.server.push_disabled(user, token), f"registration gone after {count - 1} cancel(s)"
        push = stack.message_and_reply(user, token, count)
        assert_error(push, "cancel", "item-not-found", stack)
    wait_for(f"{stack.kind} to drop the registration", lambda: stack.server.push_disabled(user, token), timeout=10)

    stack.send(user, "after the registration is gone")
    stack.barrier()
    assert len(stack.wiretap.pushes_for(token)) == cancels_needed, stack.wiretap.summary()
    # fpush remembers the dead token: the provider was asked once, not once per push.
    requests = stack.providers[platform].requests(token)
    assert len(requests) == 1 and requests[0]["status"] != 200, requests


def test_unknown_push_module_is_cancelled(stack: Stack):
    user, token = stack.registered_user_with_push("ok", "apns", "no-such-module")

    push = stack.message_and_reply(user, token, 1)

    assert_error(push, "cancel", "item-not-found", stack)
    assert "no-such-module" in (push.reply.text or ""), push.describe()
    assert stack.providers["apns"].requests(token) == []


# 3. The provider is unavailable or throttles: fpush answers wait, the registration survives.


@pytest.mark.parametrize("platform", ["apns", "fcm"])
def test_provider_throttling_is_answered_wait_and_the_token_held_until_retry_after(
    stack: Stack, platform: str
):
    # The provider says "too many for this device" (FCM with a Retry-After of 30 s, APNS with
    # none, as Apple answers, so fpush's own hold of 60 s applies): the push is answered wait,
    # and the next one for that token is answered wait too, without asking the provider again.
    user, token = stack.registered_user_with_push("throttled-once", platform, platform)

    first = stack.message_and_reply(user, token, 1)
    assert_error(first, "wait", "resource-constraint", stack)

    second = stack.message_and_reply(user, token, 2)
    assert_error(second, "wait", "resource-constraint", stack)
    assert [r["status"] for r in stack.providers[platform].requests(token)] == [429]
    assert not stack.server.push_disabled(user, token)


@pytest.mark.parametrize("platform", ["apns", "fcm"])
def test_provider_unavailable_is_answered_wait_and_registration_survives(stack: Stack, platform: str):
    # More wait replies in a row than Prosody's push_max_errors: still registered.
    user, token = stack.registered_user_with_push("unavailable", platform, platform)

    for count in range(1, PUSH_MAX_ERRORS + 2):
        push = stack.message_and_reply(user, token, count)
        assert_error(push, "wait", "internal-server-error", stack)

    # Still registered: one more message, one more push.
    assert not stack.server.push_disabled(user, token)
    stack.message_and_reply(user, token, PUSH_MAX_ERRORS + 2)


@pytest.mark.parametrize("platform", ["apns", "fcm"])
def test_provider_unavailable_once_is_retried_and_delivered(stack: Stack, platform: str):
    # A 5xx means the provider did not take the push: fpush retries once before answering.
    user, token = stack.registered_user_with_push("unavailable-once", platform, platform)

    push = stack.message_and_reply(user, token, 1)

    assert_result(push, stack)
    assert [r["status"] for r in stack.providers[platform].requests(token)] == [503, 200]


def test_provider_timeout_is_answered_wait(stack: Stack):
    user, token = stack.registered_user_with_push("stall", "apns", "apns")

    push = stack.message_and_reply(user, token, 1)

    assert_error(push, "wait", "remote-server-timeout", stack)


# 4. Ratelimit: a burst reaches the provider exactly as often as the ratelimit allows.


@pytest.mark.parametrize("platform", ["apns", "fcm"])
def test_ratelimit_lets_through_exactly_one_send_now_and_one_at_window_end(stack: Stack, platform: str):
    user, token = stack.registered_user_with_push("ok", platform, f"{platform}-limited")
    burst = 4

    stack.send(user, *[f"burst {n}" for n in range(burst)])
    pushes = stack.wiretap.wait_for_replies(token, burst, timeout=RATELIMIT_WINDOW + 20)

    # The first push is sent at once, the second is queued and sent when the window ends, the
    # others are refused at once.
    assert len(stack.providers[platform].requests(token)) == 2, stack.providers[platform].requests(token)
    results = [p for p in pushes if p.reply.kind == "result"]
    refused = [p for p in pushes if p.reply.kind == "error"]
    assert len(results) == 2, stack.wiretap.summary()
    for push in refused:
        assert_error(push, "wait", "resource-constraint", stack)
    queued_reply_at = max(p.answered_at for p in results)
    assert queued_reply_at - pushes[0].stanza.at >= RATELIMIT_WINDOW, stack.wiretap.summary()
    assert all(p.answered_at < queued_reply_at for p in refused), stack.wiretap.summary()


# 5. and 6. Restarts: fpush reconnects, and nothing is lost afterwards.


def test_fpush_restart_reconnects_and_next_push_is_delivered(stack: Stack):
    user, token = stack.registered_user_with_push("ok", "apns", "apns")

    assert stack.restart_fpush() == 0, "fpush should exit 0 on SIGTERM\n" + stack.fpush.log_tail()
    # The stream ended in order: fpush closed it and the server closed it in turn.
    stopped = (stack.fpush.workdir / f"fpush-{stack.fpush.starts - 1}.log").read_text()
    assert "stream closed; bye" in stopped and "did not close in time" not in stopped, stopped[-2000:]

    push = stack.message_and_reply(user, token, 1)
    assert_result(push, stack)
    assert len(stack.providers["apns"].requests(token)) == 1


def test_xmpp_server_restart_fpush_reconnects_by_itself(stack: Stack):
    user, token = stack.registered_user_with_push("ok", "fcm", "fcm")
    before = stack.wiretap.handshakes()

    stack.server.restart()
    stack.wiretap.wait_for_handshake(after=before, timeout=60)
    stack.fpush.assert_running()

    push = stack.message_and_reply(user, token, 1)
    assert_result(push, stack)
    assert len(stack.providers["fcm"].requests(token)) == 1


# 7. The keepalive: fpush pings its own JID, the server routes the ping back, and an idle link
# stays up across several keepalive intervals (5 s here, see servers.py).


def keepalive_pings(stack: Stack, direction: str) -> list:
    return stack.wiretap.iqs_with_id("fpush-keepalive", direction)


def test_the_keepalive_ping_comes_back_through_the_server_and_the_idle_link_stays_up(stack: Stack):
    handshakes = stack.wiretap.handshakes()
    sent_before = len(keepalive_pings(stack, "to_server"))
    back_before = len(keepalive_pings(stack, "to_fpush"))
    jid = stack.server.component_jid

    def routed_back():
        back = [s for s in keepalive_pings(stack, "to_fpush")[back_before:] if s.element.get("type") == "get"]
        return back if len(back) >= 2 else None

    back = stack.wiretap.wait_until("two keepalive pings routed back to fpush", routed_back, timeout=30)
    assert all((s.element.get("from"), s.element.get("to")) == (jid, jid) for s in back)
    sent = [s for s in keepalive_pings(stack, "to_server")[sent_before:] if s.element.get("type") == "get"]
    assert len(sent) >= 2 and all(s.element.get("to") == jid for s in sent)
    assert stack.wiretap.handshakes() == handshakes, "the idle link was dropped\n" + stack.fpush.log_tail()
    stack.fpush.assert_running()


def test_a_restarted_xmpp_server_is_rejoined_within_seconds_even_with_a_long_connection_error_wait(
    stack: Stack,
):
    # fpush's at-once reconnect finds the restarting server not listening yet; the quick tries
    # (1 s, 2 s, 4 s) that follow rejoin it long before `xmppconnectionError` (60 s here) would.
    original = stack.fpush.settings_path.read_text()
    settings = json.loads(original)
    settings["timeout"]["xmppconnectionError"] = "60s"
    before = stack.wiretap.handshakes()
    assert stack.fpush.stop() == 0, stack.fpush.log_tail()
    stack.fpush.settings_path.write_text(json.dumps(settings, indent=2))
    try:
        stack.fpush.start()
        before = stack.wiretap.wait_for_handshake(after=before)
        stack.server.restart()
        listening = time.monotonic()
        stack.wiretap.wait_for_handshake(after=before, timeout=45)
        rejoined = time.monotonic() - listening
        assert rejoined < 15, f"rejoined {rejoined:.1f} s after the server listened again\n{stack.fpush.log_tail()}"
    finally:
        before = stack.wiretap.handshakes()
        stack.fpush.stop()
        stack.fpush.settings_path.write_text(original)
        stack.fpush.start()
        stack.wiretap.wait_for_handshake(after=before)
    user, token = stack.registered_user_with_push("ok", "apns", "apns")
    assert_result(stack.message_and_reply(user, token, 1), stack)
