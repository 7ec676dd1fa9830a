"""The operator console in a real browser, beside the widget in another: `python -m core.cli run`
as a subprocess on embedded defaults (the offline provider answers), Debian's Chromium through
Playwright. An operator signs in, sees a user's request for a person appear live, takes the
conversation, replies (the reply shows up in the user's widget), hands it back, and the bot
answers the user again."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright.async_api")
from playwright.async_api import Browser, Page, expect

from tests.test_widget_browser import (
    ARTIFACTS,
    BOT_MSG,
    CHROMIUM,
    FINAL_BOT_MSG,
    REPLY_TIMEOUT_MS,
    REPO_ROOT,
    _send,
    browser,  # noqa: F401  (the fixture)
    running_relaybot,
    server_env,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

OPERATOR, PASSWORD = "ana@example.com", "correct horse battery"
ACK = "Thanks, I've passed this to our support team: a person will follow up here shortly."
PERSON_SAYS = "Hi, this is Ana from support. Your refund is on its way."


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`relaybot run` with one operator account, stopped by its PID at the end."""
    tmp = tmp_path_factory.mktemp("console-server")
    env = server_env(tmp, RELAYBOT_CONSOLE__PASSWORD_ROUNDS="4")
    added = subprocess.run(
        [sys.executable, "-m", "core.cli", "operator", "add", OPERATOR, "--password-stdin"],
        input=PASSWORD,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    with running_relaybot(tmp, env) as base:
        yield base


async def _page(browser: Browser, url: str) -> tuple[Page, list[str]]:  # noqa: F811
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    return page, errors


async def test_an_operator_takes_a_conversation_over_and_gives_it_back(
    browser: Browser,  # noqa: F811
    console_server: str,
) -> None:
    console, console_errors = await _page(browser, console_server + "/console")
    await expect(console.get_by_test_id("login-form")).to_be_visible()
    await expect(console.get_by_test_id("login-error")).to_be_hidden()  # a first visit is not an error

    # A wrong password is refused in words; the right one opens the desk.
    await console.get_by_test_id("login-email").fill(OPERATOR)
    await console.get_by_test_id("login-password").fill("not the password")
    await console.get_by_test_id("login-submit").click()
    await expect(console.get_by_test_id("login-error")).to_have_text("wrong email or password")
    await console.get_by_test_id("login-password").fill(PASSWORD)
    await console.get_by_test_id("login-submit").click()
    await expect(console.get_by_test_id("whoami")).to_have_text(OPERATOR)
    await expect(console.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await expect(console.get_by_test_id("waiting-empty")).to_be_visible()

    # The user, in another browser context, asks for a person in the widget.
    widget, widget_errors = await _page(browser, console_server + "/")
    await _send(widget, "please let me talk to an agent")
    await expect(widget.locator(FINAL_BOT_MSG)).to_have_text(ACK, timeout=REPLY_TIMEOUT_MS)

    # It appears in the console without a reload.
    waiting = console.get_by_test_id("queue-waiting").get_by_test_id("queue-item")
    await expect(waiting).to_have_count(1, timeout=10_000)
    await expect(waiting).to_contain_text("web")
    await expect(waiting).to_contain_text("waiting")
    await waiting.click()
    transcript = console.get_by_test_id("transcript")
    await expect(transcript.locator('[data-author="user"] p')).to_have_text("please let me talk to an agent")
    await expect(console.get_by_test_id("conversation-state")).to_have_attribute("data-state", "pending_human")

    await console.get_by_test_id("take").click()
    await expect(console.get_by_test_id("conversation-state")).to_have_text(f"human by {OPERATOR}")
    await expect(console.get_by_test_id("queue-live").get_by_test_id("queue-item")).to_have_count(1)
    await expect(waiting).to_have_count(0)

    await console.get_by_test_id("reply-text").fill(PERSON_SAYS)
    await console.get_by_test_id("reply-send").click()
    await expect(transcript.locator(f'[data-author="{OPERATOR}"] p')).to_have_text(PERSON_SAYS)
    await expect(widget.locator(BOT_MSG).last).to_have_text(PERSON_SAYS, timeout=10_000)

    # The user answers: it shows up live in the transcript; the bot stays silent.
    await _send(widget, "thank you, Ana")
    await expect(transcript.locator('[data-author="user"] p').last).to_have_text("thank you, Ana", timeout=10_000)
    await widget.wait_for_timeout(500)
    await expect(widget.locator(BOT_MSG)).to_have_count(2)

    await console.get_by_test_id("hand-back").click()
    await expect(console.get_by_test_id("conversation-state")).to_have_attribute("data-state", "bot")
    await expect(console.get_by_test_id("queue-live").get_by_test_id("queue-item")).to_have_count(0)

    await _send(widget, "How do I export my tasks?")
    await expect(widget.locator(FINAL_BOT_MSG)).to_have_count(3, timeout=REPLY_TIMEOUT_MS)
    answer = (await widget.locator(FINAL_BOT_MSG).last.inner_text()).strip()
    assert answer and answer not in (ACK, PERSON_SAYS)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await console.screenshot(path=str(ARTIFACTS / "console.png"))
    assert console_errors == [] and widget_errors == []
