"""Text for people of :mod:`payhub.provenance`'s answers: ``payhub explain`` and ``payhub audit trace``.

Markup is payhub's own: every value from the database goes through :func:`~payhub.cli.output.shown` (or
:func:`~payhub.cli.output.plain` in lines printed without markup), and a literal ``[`` of payhub's own text is
escaped (``\\[adjustment]``). Times are :func:`payhub.clock.isoformat` text, as in the JSON. Lines are never wrapped
(:func:`say`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payhub.cli.output import inline_json, plain, say, shown
from payhub.provenance import (
    EventInfo,
    EventsExplanation,
    Explanation,
    FundInfo,
    PayoutExplanation,
    PayoutView,
    RelatedReward,
    RewardView,
)


def print_explanation(data: Explanation) -> None:
    """``payhub explain``'s text: a payout and each item, a reward and its payouts, or events and theirs. A program
    version's parameters are printed once."""
    if data["kind"] == "payout":
        _payout_answer(data)
    elif data["kind"] == "reward":
        _reward(data, "", set())
        for payout in data["payouts"]:
            _payout(payout, "")
    else:
        _events_answer(data)


def _payout_answer(data: PayoutExplanation) -> None:
    _payout(data["payout"], "")
    net = data["net"]
    adds_up = "" if net["adds_up"] else f" [bold red]but the payout's amount is {net['amount']}[/bold red]"
    say(f"[bold]{net['items']} item(s)[/bold]: rewards {net['rewards']}, adjustments {net['adjustments']}, "
        f"net {net['total']} {shown(net['currency'])}{adds_up}")
    seen: set[tuple[str, int]] = set()
    for number, item in enumerate(data["items"], start=1):
        fx = " (converted)" if item["item"]["fx"] else ""
        say(f"[bold]Item {number} of {len(data['items'])}[/bold]: {item['item']['amount']} "
            f"{shown(item['item']['currency'])}{fx}")
        _reward(item, "  ", seen)


def _events_answer(data: EventsExplanation) -> None:
    seen: set[tuple[str, int]] = set()
    for view in data["events"]:
        e = view["event"]
        reason = f": {shown(e['reason'])}" if e["reason"] else ""
        say(f"[bold]Event {e['id']}[/bold] {shown(e['key'])} ({e['status']}{reason})")
        _event_lines(e, "  ")
        rewarded: dict[str, list[int]] = {}
        for reward in view["rewards"]:
            rewarded.setdefault(reward["program"]["name"], []).append(reward["reward"]["id"])
        for c in view["calculations"]:
            why = f": {shown(c['reason'])}" if c["reason"] else ""
            ids = rewarded.get(c["program"])
            made = f" (reward {', '.join(map(str, ids))})" if ids else ""
            say(f"  program {shown(c['program'])} version {c['version']} ({shown(c['calculator'])}): "
                f"{c['status']}{why}{made}")
        if not view["calculations"]:
            say("  no program calculated this event")
        for fund in view["funds"]:
            _fund(fund, "  ")
        for reward in view["rewards"]:
            _reward(reward, "  ", seen, with_event=False)
    for payout in data["payouts"]:
        _payout(payout, "")


def _event_lines(e: EventInfo, indent: str) -> None:
    say(f"{indent}CRM record {shown(e['object_type'])} {shown(e['object_id'])} from source {shown(e['source'])}, "
        f"transition {shown(e['transition'])}")
    amount = f", amount {shown(e['amount'])} {shown(e['currency'])}" if e["amount"] is not None else ""
    partner = f", partner {shown(e['partner'])}" if e["partner"] is not None else ""
    say(f"{indent}{shown(e['type'])} at {shown(e['occurred_at'])}{amount}, payee {shown(e['payee'])}{partner}")
    if e["attributes"]:
        say(f"{indent}attributes: {inline_json(e['attributes'])}")


def _reward(view: RewardView, indent: str, seen: set[tuple[str, int]], *, with_event: bool = True) -> None:
    """One reward's explanation; ``seen`` holds the program versions whose parameters were printed already."""
    r, p, c, e = view["reward"], view["program"], view["calculation"], view["event"]
    adjustment = " \\[adjustment]" if r["kind"] == "adjustment" else ""  # a literal "[adjustment]", not a markup tag
    say(f"{indent}[bold]Reward {r['id']}[/bold]: {r['amount']} {shown(r['currency'])} to {shown(r['payee'])} "
        f"({r['status']}){adjustment}")
    say(f"{indent}  {shown(r['description'])}")
    if r["details"]:
        say(f"{indent}  details: {inline_json(r['details'])}")
    rules = view["rules"]
    for cap in rules["caps"]:
        say(f"{indent}  cap {shown(_cap(cap))}")
    if rules["split"]:
        s = rules["split"]
        say(f"{indent}  split: {shown(s['percent'])}% of {shown(s['of'])} {shown(r['currency'])} "
            f"(primary payee {shown(s['primary'])})")
    if r["fx"]:
        fx = r["fx"]
        say(f"{indent}  paid in the payee's currency at {shown(fx.get('rate'))} ({shown(fx.get('rate_type'))} rate "
            f"of {shown(fx.get('rate_date'))}, {shown(fx.get('date_used'))} date, {shown(fx.get('source'))})")
    if with_event:
        say(f"{indent}[bold]Event[/bold] {e['id']} {shown(e['key'])}")
        _event_lines(e, indent + "  ")
    say(f"{indent}[bold]Program[/bold] {shown(p['name'])} version {p['version']}, calculator {shown(p['calculator'])}")
    if (p["name"], p["version"]) in seen:
        say(f"{indent}  parameters: as above")
    else:
        seen.add((p["name"], p["version"]))
        say(f"{indent}  parameters: {inline_json(p['parameters'])}")
    why = f": {shown(c['reason'])}" if c["reason"] else ""
    say(f"{indent}  calculation {c['id']} {c['status']} at {shown(c['calculated_at'])}{why}")
    for fund in view["funds"]:
        _fund(fund, indent + "  ")
    if r["approvals_needed"]:
        who = f" ({', '.join(shown(a) for a in r['approvers'])})" if r["approvers"] else ""
        say(f"{indent}Approvals {len(r['approvers'])}/{r['approvals_needed']}{who}")
        for a in view["approvals"]:
            note = f": {shown(a['note'])}" if a["note"] else ""
            say(f"{indent}  {shown(a['approver'])} at {shown(a['at'])}{note}")
    for entry in view["history"]:
        if entry["action"] == "reward.approval_refused":
            detail = entry["detail"] if isinstance(entry["detail"], dict) else {}
            say(f"{indent}  refused at {shown(entry['at'])}: {shown(detail.get('reason'))}")
    _state(view, indent)
    for earlier in view["takes_back"]:
        say(f"{indent}takes back {_related(earlier)}")
    for later in view["adjustments"]:
        say(f"{indent}later on this record: {_related(later)}")
    for link in view["in_payouts"]:
        current = " (current)" if link["id"] == r["payout"] and len(view["in_payouts"]) > 1 else ""
        say(f"{indent}[bold]Payout {link['id']}[/bold] ({link['status']}): {link['amount']} "
            f"{shown(link['currency'])}{current}")


def _fund(fund: FundInfo, indent: str) -> None:
    expires = f", expires {shown(fund['expires_at'])}" if fund["expires_at"] else ""
    details = f" {inline_json(fund['details'])}" if fund["details"] else ""
    say(f"{indent}fund of {shown(fund['program'])} for {shown(fund['holder'])}: {shown(fund['amount'])} "
        f"{shown(fund['unit'])}{expires} ({shown(fund['description'])}){details}")


def _state(view: RewardView, indent: str) -> None:
    """Why a reward is not moving: held with its code, carried forward, or cancelled."""
    r = view["reward"]
    if r["status"] == "held":
        code = f" ({shown(r['hold_code'])})" if r["hold_code"] else ""
        say(f"{indent}[yellow]Held{code}[/yellow]: {shown(r['hold_reason'])}")
    elif r["status"] == "carried":
        say(f"{indent}[yellow]Carried forward[/yellow]: {shown(r['hold_reason'])}")
    elif r["status"] == "cancelled":
        cancelled = [e for e in view["history"] if e["action"] == "reward.cancelled"]
        detail = cancelled[-1]["detail"] if cancelled and isinstance(cancelled[-1]["detail"], dict) else {}
        by = f" by {shown(cancelled[-1]['actor'])} at {shown(cancelled[-1]['at'])}" if cancelled else ""
        say(f"{indent}[yellow]Cancelled[/yellow]{by}: {shown(detail.get('reason'))}")


def _cap(cap: Any) -> str:
    if isinstance(cap, dict) and "limit" in cap:
        return f"{cap.get('cap')}: limit {cap.get('limit')}, used {cap.get('used')}, cut {cap.get('cut')}"
    if isinstance(cap, dict):
        return f"{cap.get('cap')}: earned {cap.get('earned')}, cut {cap.get('capped')}"
    return str(cap)


def _related(other: RelatedReward, text: Callable[[Any], str] = shown) -> str:
    """Another reward of the record, its values through ``text`` (:func:`shown`, or :func:`plain` without markup)."""
    payout = f" in payout {other['payout']}" if other["payout"] is not None else ""
    return (f"reward {other['id']} {other['amount']} {text(other['currency'])} to {text(other['payee'])} "
            f"({other['status']}{payout}), event {other['event']} {text(other['event_type'])} at "
            f"{text(other['occurred_at'])}")


def _payout(p: PayoutView, indent: str) -> None:
    say(f"{indent}[bold]Payout {p['id']}[/bold]: {p['amount']} {shown(p['currency'])} to {shown(p['payee'])} via "
        f"{shown(p['rail'])} ({p['status']})")
    say(f"{indent}  key {shown(p['key'])}, {p['items']} item(s), created at {shown(p['created_at'])}")
    say(f"{indent}  route: {shown(p['route'])}")
    doc = p["document"]
    if doc["kind"] is not None:
        where = "".join([f" {shown(doc['file'])}" if doc["file"] else "",
                         f" line {doc['line']}" if doc["line"] is not None else "",
                         f" number {shown(doc['credit_note'])}" if doc["credit_note"] else "",
                         f" id {shown(doc['order_id'])}" if doc["order_id"] else ""])
        say(f"{indent}  document: {shown(doc['kind'])}{where or ' ' + shown(doc['reference'])}")
    if doc["missing"]:
        say(f"{indent}  [dim]not recorded: {shown(doc['missing'])}[/dim]")
    for s in p["screening"]:
        who = (f" by {shown(' and '.join(s['operators']) or s['actor'])}" if s["decision"] == "released"
               else f" by {shown(s['by'])}")
        why = f": {shown(s['reason'])}" if s["reason"] else ""
        label = "screening passed" if s["decision"] == "passed" else s["decision"]
        say(f"{indent}  {label}{who} at {shown(s['at'])}{why}")
    for a in p["attempts"]:
        ref = f" ref {shown(a['provider_ref'])}" if a["provider_ref"] else ""
        detail = f": {shown(a['detail'])}" if a["detail"] else ""
        outcome = a["outcome"] or "in flight"
        say(f"{indent}  {a['kind']} #{a['number']} at {shown(a['started_at'])}: {outcome}{ref}{detail}")
    if p["reason"]:
        say(f"{indent}  {p['status']}: {shown(p['reason'])}")


def print_trace(chain: list[dict[str, Any]]) -> None:
    """``payhub audit trace``'s text: one line per event, calculation, reward, payout, attempt and adjustment."""
    def line(text: str) -> None:
        say(text, markup=False)

    for node in chain:
        e = node["event"]
        line(f"event {e['id']} {plain(e['key'])} [{e['status']}]" + (f" {plain(e['reason'])}" if e["reason"] else ""))
        for c in node["calculations"]:
            line(f"  program {plain(c['program'])}: {c['status']}" + (f" ({plain(c['reason'])})" if c["reason"] else "")
                 + f" (version {c['version']})")
        for r in node["rewards"]:
            why = ""
            if r["status"] in ("held", "carried") and r["hold_reason"]:
                code = f"{plain(r['hold_code'])}: " if r["hold_code"] else ""
                why = f" {code}{plain(r['hold_reason'])}"
            line(f"  reward {r['id']} {r['amount']} {r['currency']} to {plain(r['payee'])} [{r['status']}]{why}")
            for p in r["payouts"]:
                line(f"    payout {p['id']} {p['amount']} {p['currency']} via {plain(p['rail'])} [{p['status']}]"
                     f" key {plain(p['key'])}" + (f" ref {plain(p['provider_ref'])}" if p["provider_ref"] else ""))
                for a in p["attempts"]:
                    line(f"      {a['kind']} #{a['number']} {a['outcome'] or 'in flight'}"
                         + (f": {plain(a['detail'])}" if a["detail"] else ""))
                if p["reason"]:
                    line(f"      {p['status']}: {plain(p['reason'])}")
                if p["released_by"]:
                    line(f"      released by {plain(p['released_by'])}")
            for later in r["adjustments"]:
                line(f"    later: {_related(later, plain)}")
