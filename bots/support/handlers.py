"""The example bot's own code: intent handlers and the tools they (and the model) can call.

relaybot loads this file by path at start-up and reads `bot`. Handlers are async and get a
`HandlerTurn`: answer with `turn.reply(...)`, keep a multi-step flow with `turn.save_state(...)`,
or return without replying to let the LLM answer (it sees `turn.note(...)`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from core.handlers import BotHandlers, Button, HandlerTurn
from core.tools import ToolContext, ToolError, WithButtons

bot = BotHandlers()

ORDER_ID = re.compile(r"\bTL-?\d{5}\b", re.IGNORECASE)
YES = re.compile(r"^\s*(yes|y|yeah|yep|yup|sure|ok|okay|confirm(ed)?|please do|do it|go ahead|correct)\b", re.I)
NO = re.compile(r"^\s*(no|n|nope|nah|don'?t|do not|never ?mind|keep( it)?|stop|wait|not now)\b", re.I)
#: a message that only greets ("hi", "Hello there!", "good morning"): answered with the topics as buttons
GREETING = re.compile(r"^\s*(hi|hello|hey|hiya|howdy|good (morning|afternoon|evening))( there)?[\s!.,]*$", re.I)
# Asking for a person, not mentioning one: "I need to talk to someone", but not "how do I invite someone to my
# workspace?" or "I don't get notified when someone assigns me a task".
_PERSON = r"(?:human|person|someone|somebody|agent|representative|operator)"
WANTS_HUMAN = re.compile(
    rf"\b(?:talk|speak|chat)\s+(?:to|with)\b.{{0,20}}?\b{_PERSON}\b"
    rf"|\b(?:get|put|connect|transfer)\s+me\b.{{0,20}}?\b{_PERSON}\b"
    r"|\b(?:want|need)\s+(?:a|an)\s+(?:real\s+|live\s+)?(?:human|person|agent|representative|operator)\b"
    r"|\b(?:real|live)\s+(?:person|human|agent)\b"
    r"|^\W*(?:human|agent|operator|representative)\W*$",
    re.I,
)
SUPPORT_EMAIL = "support@tasklane.example"


# --- tools -----------------------------------------------------------------------------------------


@bot.tool(
    description="Look up a Tasklane order (a subscription payment) by its order number, e.g. TL-10042.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "the order number, like TL-10042"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
)
async def lookup_order(ctx: ToolContext, order_id: str) -> WithButtons:
    if ctx.bot_dir is None:
        raise ToolError("the order list is not available")
    orders = await asyncio.to_thread(_read_orders, ctx.bot_dir / "tools" / "orders.json")
    key = re.sub(r"^TL-?", "TL-", order_id.strip().upper())
    order = orders.get(key)
    if order is None:
        raise ToolError(f"there is no order {order_id!r}; order numbers look like TL-10042")
    # When the model looked the order up, its answer comes with this button (see order_invoice below).
    return WithButtons(order, buttons=[Button("order.invoice", "Get the invoice", value=key)])


def _read_orders(path: Path) -> dict[str, dict[str, Any]]:
    orders: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["orders"]
    return orders


@bot.tool(
    description="Open a ticket for the support team (a cancellation request, a bug report, a billing problem).",
    parameters={
        "type": "object",
        "properties": {
            "subject": {"type": "string", "minLength": 3, "maxLength": 200},
            "description": {"type": "string", "minLength": 1, "maxLength": 5000},
            "category": {"type": "string", "enum": ["cancellation", "billing", "technical", "other"]},
        },
        "required": ["subject", "description", "category"],
        "additionalProperties": False,
    },
)
async def create_ticket(ctx: ToolContext, subject: str, description: str, category: str) -> dict[str, Any]:
    """POSTs to `[tools.settings] ticket_webhook_url`; without one, records the ticket under the data folder."""
    ticket = {
        "subject": subject,
        "description": description,
        "category": category,
        "user_id": ctx.user_id,
        "channel": ctx.channel,
        "session_id": ctx.session_id,
        "created_at": ctx.received_at.isoformat(),
    }
    # The same message handled twice (a redelivery) carries the same key: the ticket is opened once.
    digest = hashlib.sha256(json.dumps([subject, description, category]).encode()).hexdigest()[:16]
    key = f"{ctx.request_id}:{digest}"
    url = ctx.settings.get("ticket_webhook_url", "")
    if not url:
        await asyncio.to_thread(_append_jsonl, ctx.data_dir / "tickets.jsonl", {**ticket, "key": key})
        return {"ticket_id": f"local-{digest[:8]}", "recorded": "locally"}
    try:
        async with ctx.http.post(url, json=ticket, headers={"Idempotency-Key": key}) as response:
            if response.status >= 300:
                raise ToolError(f"the ticketing service answered {response.status}")
            body = await response.json(content_type=None)
    except aiohttp.ClientError as exc:
        raise ToolError(f"the ticketing service could not be reached ({type(exc).__name__})") from exc
    if not isinstance(body, dict) or not body.get("id"):
        raise ToolError("the ticketing service gave no ticket id")
    return {"ticket_id": str(body["id"])}


@bot.tool(
    description="Hand the conversation to a human support agent, who will follow up with the user.",
    parameters={
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "what the user needs, in a sentence"}},
        "required": ["reason"],
        "additionalProperties": False,
    },
)
async def handoff_to_human(ctx: ToolContext, reason: str) -> dict[str, Any]:
    record = {
        "user_id": ctx.user_id,
        "channel": ctx.channel,
        "session_id": ctx.session_id,
        "reason": reason,
        "created_at": ctx.received_at.isoformat(),
    }
    await asyncio.to_thread(_append_jsonl, ctx.data_dir / "handoffs.jsonl", record)
    if ctx.ask_for_person is not None:
        # The conversation goes to the operators' queue when the turn ends; the bot stays silent until handed back.
        ctx.ask_for_person(reason)
    return {"status": "queued", "follow_up": "a person from the support team will reply in this conversation"}


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record, ensure_ascii=False) + "\n")


# --- handlers --------------------------------------------------------------------------------------


CONFIRM_CANCEL = (
    "I can help you cancel your Tasklane subscription. Just to be sure: "
    "do you want to cancel it? Please answer **yes** or **no**."
)
YES_NO = (Button("cancel.yes", "Yes, cancel it", style="danger"), Button("cancel.no", "No, keep it"))
TOPICS = (Button("topic.billing", "Billing"), Button("topic.problem", "A problem"), Button("topic.cancel", "Cancel"))


@bot.intent("cancellation")
async def cancellation(turn: HandlerTurn) -> None:
    """Confirm (yes/no buttons, or typed), ask why, then record the request as a ticket. State in the session."""
    step = turn.state.get("step")
    clicked = turn.action.id if turn.action is not None else None
    if step is None:
        await turn.save_state(step="confirm")
        turn.reply(CONFIRM_CANCEL, buttons=YES_NO)
    elif step == "confirm":
        if clicked == "cancel.yes" or (clicked is None and YES.match(turn.message)):
            await turn.save_state(step="reason")
            turn.reply("Sorry to see you go. Could you tell me in a sentence why you're cancelling?")
        elif clicked == "cancel.no" or (clicked is None and NO.match(turn.message)):
            await turn.end_flow()
            turn.reply("No problem, I've left your subscription as it is. Anything else I can help with?")
        else:
            # Something else entirely: leave the flow and let the model answer it.
            await turn.end_flow()
            turn.note("The user was asked to confirm a cancellation and wrote something else; nothing was cancelled.")
    else:
        await turn.end_flow()
        reason = turn.message.strip()
        result = await turn.call_tool(
            "create_ticket",
            subject="Cancellation request",
            description=f"{turn.user_name or turn.user_id} asked to cancel their subscription. Reason: {reason}",
            category="cancellation",
        )
        if result.ok:
            turn.reply(
                f"Thank you. Your cancellation request is recorded (ticket **{result.output['ticket_id']}**). "
                "Your plan stays active until the end of the current billing period, and you'll get a "
                "confirmation by email."
            )
        else:
            turn.reply(
                "I'm sorry: I couldn't record your cancellation request just now, so nothing has changed yet. "
                f"Please try again in a few minutes, or write to {SUPPORT_EMAIL}."
            )


@bot.intent("billing")
async def billing(turn: HandlerTurn) -> None:
    """An order number in the message: look it up and answer from the record; else the LLM answers."""
    match = ORDER_ID.search(turn.message)
    if match is None:
        return
    result = await turn.call_tool("lookup_order", order_id=match.group(0))
    if not result.ok:
        turn.reply(f"I couldn't find order **{match.group(0).upper()}**. Could you check the number? {result.error}.")
        return
    order = result.output
    status = str(order["status"]).replace("_", " ")
    turn.reply(
        f"Order **{order['order_id']}**: {order['plan']} plan, {order['seats']} seats, billed {order['period']}, "
        f"{order['amount']} {order['currency']} on {order['date']}: **{status}**. "
        f"Invoice: {order['invoice_url']}"
    )


@bot.intent("technical")
async def technical(turn: HandlerTurn) -> None:
    """Asking for a person: hand off. Otherwise the LLM answers from the knowledge base."""
    if WANTS_HUMAN.search(turn.message):
        result = await turn.call_tool("handoff_to_human", reason=turn.message[:500])
        if result.ok:
            turn.reply("I've passed this to our support team: a person will follow up in this conversation soon.")
        else:
            turn.reply(f"I couldn't reach the support team from here, sorry. Please write to {SUPPORT_EMAIL}.")
        return
    turn.note("If the steps in the knowledge do not solve it, offer to hand the conversation to a person.")


@bot.intent("general")
async def general(turn: HandlerTurn) -> None:
    """A greeting gets the model's answer with the three topics as buttons; anything else, the model alone."""
    if GREETING.match(turn.message):
        turn.offer(TOPICS)


# --- buttons: the greeting's topics ----------------------------------------------------------------


@bot.action("topic.billing")
async def topic_billing(turn: HandlerTurn) -> None:
    turn.reply(
        "Happy to help with billing. What would you like to know? If it's about a payment, "
        "send me the order number (it looks like TL-10042)."
    )


@bot.action("topic.problem")
async def topic_problem(turn: HandlerTurn) -> None:
    turn.reply("Sorry to hear that. What's going wrong? Tell me what you did and what you saw.")


@bot.action("topic.cancel")
async def topic_cancel(turn: HandlerTurn) -> None:
    # The same confirmation the cancellation intent starts with: its flow takes the answer.
    await turn.start_flow("cancellation", step="confirm")
    turn.reply(CONFIRM_CANCEL, buttons=YES_NO)


@bot.action("order.invoice")
async def order_invoice(turn: HandlerTurn) -> None:
    """The button lookup_order offers with the model's answer: the order's invoice link."""
    order_id = turn.action.value if turn.action is not None and turn.action.value else ""
    result = await turn.call_tool("lookup_order", order_id=order_id)
    if not result.ok:
        turn.reply(f"I couldn't find that order's invoice, sorry: {result.error}.")
        return
    order = result.output
    turn.reply(f"Here is the invoice for order **{order['order_id']}**: {order['invoice_url']}")


# --- slash commands (Telegram's menu; any channel's users can type them) ------------------------


@bot.command("start")
async def start_command(turn: HandlerTurn) -> None:
    """The greeting: the bot's welcome, with the three topics as buttons."""
    turn.reply(f"{turn.welcome} What can I help you with?", buttons=TOPICS)


@bot.command("help")
async def help_command(turn: HandlerTurn) -> None:
    turn.reply(
        "I can help with **plans and billing** (send an order number like TL-10042 to look it up), "
        "**problems** with Tasklane (and hand you to a person if needed), and **cancelling** your "
        "subscription. Just ask in your own words; 'what do you remember about me?' and 'forget everything' "
        "work too."
    )
