"""The web widget in a real browser, against the real app.

`python -m core.cli run` is started as a subprocess on embedded defaults (no Redis, no SQL server, no
LLM keys, so the offline provider answers) and Debian's Chromium is driven through Playwright's async API.
The widget lives in an open shadow root; Playwright's CSS and test-id locators pierce open shadow roots.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright.async_api")
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
# Services and providers the server must not see: it runs on embedded defaults and the offline provider.
SCRUBBED_ENV = ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
STARTUP_TIMEOUT_S = 30.0
REPLY_TIMEOUT_MS = 30_000

USER_MSG = '[data-testid="rb-msg"][data-role="user"]'
BOT_MSG = '[data-testid="rb-msg"][data-role="bot"]'
FINAL_BOT_MSG = BOT_MSG + ":not([data-state])"  # a streaming bubble carries data-state="streaming"
SHADOW = "document.getElementById('relaybot-widget').shadowRoot"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthz_ok(url: str) -> bool:
    # No proxy, whatever the environment says: the server is on 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the server keeps its data and writes its output (server.out, server.err)."""
    return tmp_path_factory.mktemp("widget-server")


@contextlib.contextmanager
def running_relaybot(tmp: Path, env: dict[str, str]) -> Iterator[str]:
    """`relaybot run` on a free port with `env`, its output in tmp/server.out and server.err; its
    base URL once /healthz answers, and stopped by its PID on the way out."""
    port = _free_port()
    stdout_path, stderr_path = tmp / "server.out", tmp / "server.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        # Files, not pipes: a chatty server can never block on a full pipe nobody reads.
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "run", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthz_ok(base + "/healthz"):
            if proc.poll() is not None or time.monotonic() > deadline:
                what = f"exited with {proc.returncode}" if proc.poll() is not None else "never answered"
                pytest.fail(
                    f"relaybot server {what} on GET /healthz within {STARTUP_TIMEOUT_S:.0f} s; stderr:\n"
                    + stderr_path.read_text(errors="replace")[-5000:]
                )
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def server_env(tmp: Path, **settings: str) -> dict[str, str]:
    """This process's environment without the services and keys the server must not see."""
    env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
    env.update(RELAYBOT_DATA_DIR=str(tmp / "data"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **settings)
    return env


@pytest.fixture(scope="module")
def server_url(server_tmp: Path) -> Iterator[str]:
    """The real app on a free port, stopped by its PID when the module's tests are done."""
    with running_relaybot(server_tmp, server_env(server_tmp)) as base:
        yield base


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _open_page(browser: Browser, url: str, viewport: dict[str, int]) -> tuple[Page, list[str]]:
    """A page in a fresh context (so a fresh localStorage), and the list its uncaught errors go to."""
    context = await browser.new_context(viewport={"width": viewport["width"], "height": viewport["height"]})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url + "/")
    return page, errors


async def _send(page: Page, text: str) -> None:
    await page.get_by_test_id("rb-input").fill(text)
    await page.get_by_test_id("rb-send").click()


async def test_reply_appears_and_survives_a_reload(browser: Browser, server_url: str) -> None:
    page, errors = await _open_page(browser, server_url, {"width": 1280, "height": 800})
    # The demo page embeds the widget with data-open="true".
    await expect(page.get_by_test_id("rb-panel")).to_be_visible()
    await expect(page.get_by_test_id("rb-launcher")).to_have_attribute("aria-expanded", "true")
    await expect(page.get_by_test_id("rb-panel")).to_have_attribute("aria-label", "Chat with Tasklane Support")

    text = "Hello! How do I reset my password?"
    await _send(page, text)
    user, bot = page.locator(USER_MSG), page.locator(BOT_MSG)
    await expect(user).to_have_count(1)
    await expect(user).to_have_text(text)
    await expect(page.get_by_test_id("rb-input")).to_have_value("")

    await expect(page.locator(FINAL_BOT_MSG)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    reply = (await bot.inner_text()).strip()
    assert reply, "the bot's reply bubble is empty"
    assert reply != text, "the bot only echoed the user's message"
    await expect(user).not_to_have_attribute("data-state", "pending")  # acknowledged
    await expect(page.get_by_test_id("rb-typing")).to_be_hidden()

    await page.reload()
    # The stored transcript is drawn at once; then the widget resumes with token and after=lastSeq.
    await expect(user).to_have_text(text)
    await expect(bot).to_have_count(1)
    await expect(page.get_by_test_id("rb-status")).to_have_attribute("data-connection", "online", timeout=10_000)
    await page.wait_for_timeout(1000)  # room for a wrongly replayed reply to show up
    await expect(bot).to_have_count(1)
    await expect(user).to_have_count(1)
    assert (await bot.inner_text()).strip() == reply

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "widget.png"))
    assert errors == []


async def test_message_text_is_never_html(browser: Browser, server_url: str) -> None:
    page, errors = await _open_page(browser, server_url, {"width": 1280, "height": 800})
    payload = '<img src=x onerror="window.__pwned=1">**bold**'
    await _send(page, payload)

    user = page.locator(USER_MSG)
    await expect(user).to_have_count(1)
    await expect(user).to_contain_text('<img src=x onerror="window.__pwned=1">')
    await expect(user.locator("strong")).to_have_text("bold")  # Markdown still applies
    # Whatever the bot answers (it may quote the message) is rendered the same way.
    await expect(page.locator(FINAL_BOT_MSG)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)

    async def assert_inert() -> None:
        assert await page.evaluate("() => typeof window.__pwned") == "undefined"
        assert await page.evaluate(f"() => {SHADOW}.querySelectorAll('img').length") == 0
        assert await page.evaluate("() => document.querySelectorAll('img').length") == 0

    await assert_inert()
    await page.reload()  # the transcript rendered from localStorage must be just as inert
    await expect(page.locator(USER_MSG)).to_contain_text("<img src=x")
    await assert_inert()
    assert errors == []


async def test_phone_layout_and_keyboard(browser: Browser, server_url: str) -> None:
    width, height = 390, 844
    page, errors = await _open_page(browser, server_url, {"width": width, "height": height})
    panel, launcher, field = (
        page.get_by_test_id("rb-panel"),
        page.get_by_test_id("rb-launcher"),
        page.get_by_test_id("rb-input"),
    )
    await expect(panel).to_be_visible()
    # The panel slides in; measure once it has settled (two equal boxes in a row).
    box, previous = await panel.bounding_box(), None
    for _ in range(50):
        if box == previous:
            break
        await page.wait_for_timeout(50)
        previous, box = box, await panel.bounding_box()
    assert box is not None
    assert abs(box["x"]) <= 1 and abs(box["width"] - width) <= 1, box
    assert abs(box["y"]) <= 1 and abs(box["height"] - height) <= 1, box

    await field.focus()
    await page.keyboard.type("line one")
    await page.keyboard.press("Shift+Enter")  # a newline, not a send
    await page.keyboard.type("line two")
    await expect(page.locator(USER_MSG)).to_have_count(0)
    await expect(field).to_have_value("line one\nline two")
    await page.keyboard.press("Enter")
    await expect(page.locator(USER_MSG)).to_have_count(1)
    await expect(page.locator(USER_MSG)).to_contain_text("line one")
    await expect(page.locator(USER_MSG)).to_contain_text("line two")
    await expect(field).to_have_value("")
    await expect(field).to_be_focused()
    await expect(page.locator(FINAL_BOT_MSG)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "widget-phone.png"))

    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()
    await expect(launcher).to_have_attribute("aria-expanded", "false")
    await expect(launcher).to_be_focused()

    await page.keyboard.press("Enter")  # the launcher is a real button: the keyboard reopens it
    await expect(panel).to_be_visible()
    await expect(launcher).to_have_attribute("aria-expanded", "true")
    await expect(field).to_be_focused()
    assert errors == []


async def test_a_closed_panel_stays_closed_across_page_loads(browser: Browser, server_url: str) -> None:
    # The demo page asks for data-open="true"; once the user closes the panel, their choice wins.
    page, errors = await _open_page(browser, server_url, {"width": 390, "height": 844})
    panel, launcher = page.get_by_test_id("rb-panel"), page.get_by_test_id("rb-launcher")
    await expect(panel).to_be_visible()
    # The header names the connection, never "Online" next to a bot that says it is in offline mode.
    await expect(page.locator(".panel .subtitle")).to_have_text("Connected", timeout=10_000)

    await page.get_by_role("button", name="Close chat").click()
    await expect(panel).to_be_hidden()
    await page.reload()
    await expect(launcher).to_be_visible()
    await page.wait_for_timeout(300)  # room for a wrong reopen to happen
    await expect(panel).to_be_hidden()
    await expect(launcher).to_have_attribute("aria-expanded", "false")

    await launcher.click()
    await expect(panel).to_be_visible()
    await page.reload()
    await expect(panel).to_be_visible()
    assert errors == []


async def test_buttons_are_real_buttons_used_by_keyboard_and_mouse_then_disabled(
    browser: Browser, server_url: str
) -> None:
    page, errors = await _open_page(browser, server_url, {"width": 1280, "height": 800})
    await _send(page, "/start")
    topics = page.get_by_role("group", name="Suggested answers").first  # the greeting's
    await expect(topics.get_by_role("button")).to_have_count(3, timeout=REPLY_TIMEOUT_MS)
    await expect(topics.get_by_role("button")).to_have_text(["Billing", "A problem", "Cancel"])

    # Keyboard: focus the Cancel topic and press Enter; the click is sent as an action frame.
    cancel = topics.get_by_role("button", name="Cancel", exact=True)
    await cancel.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(USER_MSG).last).to_have_text("Cancel")
    await expect(page.locator(FINAL_BOT_MSG)).to_have_count(2, timeout=REPLY_TIMEOUT_MS)
    await expect(page.locator(FINAL_BOT_MSG).last).to_contain_text("do you want to cancel it?")
    await expect(cancel).to_have_attribute("aria-pressed", "true")
    for button in await topics.get_by_role("button").all():
        await expect(button).to_be_disabled()  # an older offer: the server would refuse it
    await expect(page.get_by_test_id("rb-input")).to_be_focused()

    # Mouse: the confirmation's own buttons are live; No keeps the subscription.
    await page.get_by_role("button", name="No, keep it").click()
    await expect(page.locator(FINAL_BOT_MSG)).to_have_count(3, timeout=REPLY_TIMEOUT_MS)
    await expect(page.locator(FINAL_BOT_MSG).last).to_contain_text("I've left your subscription as it is")
    await expect(page.get_by_test_id("rb-choice")).to_have_count(5)
    for button in await page.get_by_test_id("rb-choice").all():
        await expect(button).to_be_disabled()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "widget-buttons.png"))
    await page.reload()  # drawn from the stored transcript: still used, still disabled
    await expect(page.get_by_test_id("rb-choice")).to_have_count(5)
    for button in await page.get_by_test_id("rb-choice").all():
        await expect(button).to_be_disabled()
    assert errors == []


async def _knowledge_ingested(server_tmp: Path) -> None:
    """`relaybot run` ingests the bot's knowledge folder in the background: wait for it to be searchable."""
    deadline = time.monotonic() + 120
    while not any(
        "knowledge_ingested" in (server_tmp / f).read_text(errors="replace") for f in ("server.out", "server.err")
    ):
        assert time.monotonic() < deadline, "the knowledge folder was not ingested within 120 s"
        await asyncio.sleep(0.5)


async def _ask_the_knowledge(
    browser: Browser, server_url: str, server_tmp: Path, question: str
) -> tuple[Page, list[str], Locator]:
    """Once the knowledge is searchable, `question` asked in a fresh page; the page, its uncaught errors, and
    the bot's final bubbles (the answer is the first)."""
    await _knowledge_ingested(server_tmp)
    page, errors = await _open_page(browser, server_url, {"width": 1280, "height": 800})
    await _send(page, question)
    reply = page.locator(FINAL_BOT_MSG)
    await expect(reply).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    return page, errors, reply


async def test_a_procedure_is_drawn_as_a_numbered_list_with_a_steps_own_items_under_it(
    browser: Browser, server_url: str, server_tmp: Path
) -> None:
    _, errors, reply = await _ask_the_knowledge(browser, server_url, server_tmp, "How do I export my data?")
    steps = reply.locator(".bubble > ol > li")
    # Four steps in one list; step 2's formats (JSON, CSV) are a list inside it, not a list between two.
    await expect(steps).to_have_count(4)
    await expect(steps.first).to_contain_text("Go to Settings → General → Export data")
    formats = steps.nth(1).locator("ul > li")
    await expect(formats).to_have_count(2)
    await expect(formats.first).to_contain_text("JSON")
    await expect(steps.nth(3)).to_contain_text("Click Start export")
    assert await reply.locator(".bubble > ul").count() == 0
    assert errors == []


async def test_an_answer_from_the_knowledge_shows_its_sources_once_as_a_line_with_links(
    browser: Browser, server_url: str, server_tmp: Path
) -> None:
    question = "Which payment methods do you accept?"
    page, errors, reply = await _ask_the_knowledge(browser, server_url, server_tmp, question)
    sources = reply.get_by_test_id("rb-sources")
    # One small line under the answer; the text's own copy of the list is not shown a second time.
    await expect(sources).to_have_count(1)
    await expect(sources).to_contain_text("Sources: [1] Billing and Invoices (")
    assert (await reply.inner_text()).count("Sources") == 1
    # The title is a link to the document's address from its front matter, opened in a new tab.
    first = sources.get_by_role("link").first
    await expect(first).to_have_text("Billing and Invoices")
    await expect(first).to_have_attribute("href", "https://help.tasklane.example/billing-and-invoices")
    await expect(first).to_have_attribute("target", "_blank")
    font = await sources.evaluate("node => getComputedStyle(node).fontSize")
    assert font == "12px"

    # A handler's question (the cancellation flow's yes/no) lists no sources.
    await _send(page, "I'd like to cancel my subscription")
    await expect(reply).to_have_count(2, timeout=REPLY_TIMEOUT_MS)
    await expect(reply.nth(1)).to_contain_text("yes")
    await expect(reply.nth(1).get_by_test_id("rb-sources")).to_have_count(0)

    # Kept across a reload, drawn the same way from the stored transcript.
    await page.reload()
    await expect(
        page.locator(FINAL_BOT_MSG).first.get_by_test_id("rb-sources").get_by_role("link").first
    ).to_have_attribute("href", "https://help.tasklane.example/billing-and-invoices")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "widget-sources.png"))
    assert errors == []
