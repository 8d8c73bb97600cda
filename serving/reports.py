"""Reports for people: Markdown (``report.md``) with PNG charts, read from the store.

- ``products_report``: issue mix per product (stacked bars), weekly share of each issue
  type per product (trend lines, the spike window shaded), the flagged spikes with
  their evidence, and a table per product (``serving.insights`` computes all of it);
- ``kpis_report``: per agent and per queue first-response median/p90, SLA met %,
  tickets handled, reopened (``serving.stats``).

Charts use matplotlib's Agg canvas through ``matplotlib.figure.Figure`` (no pyplot, no
display, no global state).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from sqlalchemy.orm import Session

from model.charts import chart_fonts, chart_lang
from model.taxonomy import Taxonomy
from serving.insights import SpikeConfig, all_products
from serving.stats import agent_stats, queue_kpis

MAX_TREND_PANELS = 12
TOP_ISSUES = 5  # issue types per trend panel (plus flagged ones)


def _fmt(value: Any, pct: bool = False, digits: int = 2) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _md_text(text: str, limit: int = 160) -> str:
    one = " ".join(text.split())
    one = one if len(one) <= limit else one[: limit - 1] + "…"
    return one.replace("|", "\\|")


def _colors(names: list[str]) -> dict[str, Any]:
    """Distinct colours: tab10, then Dark2."""
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i) for i in range(10)] + [colormaps["Dark2"](i) for i in range(8)]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


# -- products ---------------------------------------------------------------------------


def issue_mix_chart(
    products: list[dict[str, Any]], path: Path, title: str, t: dict[str, str] | None = None
) -> None:
    issue_mix_figure(products, title, t).savefig(path, dpi=110)


def issue_mix_figure(
    products: list[dict[str, Any]], title: str, t: dict[str, str] | None = None
) -> Figure:
    """Stacked bars: per product, how its labels divide between the issue types and
    "no issue" (a message with two issue types counts in both, so each bar is the share
    of the product's labels and sums to 100%). ``t``: the texts (``PRODUCT_TEXTS``) and
    issue types' display names."""
    t = t or PRODUCT_TEXTS["en"]
    names = [p["product_id"] for p in products]
    used = (
        [
            i["issue_type"]
            for i in products[0]["issues"]
            if any(
                next(x for x in p["issues"] if x["issue_type"] == i["issue_type"])["count"]
                for p in products
            )
        ]
        if products
        else []
    )
    colors = _colors(used)
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 3), 5.0), layout="constrained")
    ax = fig.subplots()
    bottom = [0.0] * len(names)
    labels = [p["no_issue"] + sum(x["count"] for x in p["issues"]) for p in products]
    for issue in used + ["(no issue)"]:
        shares = []
        for p, total in zip(products, labels, strict=True):
            if issue == "(no issue)":
                count = p["no_issue"]
            else:
                count = next(x for x in p["issues"] if x["issue_type"] == issue)["count"]
            shares.append(100 * count / total if total else 0.0)
        label = t["no_issue"] if issue == "(no issue)" else t.get(issue, issue)
        ax.bar(names, shares, bottom=bottom, label=label, color=colors.get(issue, "0.8"))
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    for x, p in enumerate(products):
        ax.text(x, bottom[x] + 1, f"n={p['messages']}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel(t["mix_axis"])
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def trends_chart(
    products: list[dict[str, Any]],
    spikes: list[dict[str, Any]],
    path: Path,
    title: str,
    t: dict[str, str] | None = None,
) -> None:
    trends_figure(products, spikes, title, t).savefig(path, dpi=110)


def trends_figure(
    products: list[dict[str, Any]],
    spikes: list[dict[str, Any]],
    title: str,
    t: dict[str, str] | None = None,
) -> Figure:
    """One panel per product: each week's share of its top issue types (weeks end at the
    report's end, so the last point is the spike test's recent window, shaded when a
    spike is flagged; flagged issue types drawn thick)."""
    t = t or PRODUCT_TEXTS["en"]
    from matplotlib.dates import DateFormatter

    shown = products[:MAX_TREND_PANELS]
    used = [i["issue_type"] for i in shown[0]["issues"]] if shown else []
    colors = _colors(used)
    cols = min(3, max(1, len(shown)))
    rows = (len(shown) + cols - 1) // cols
    fig = Figure(figsize=(5.2 * cols, 3.5 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, shown, strict=False):
        mids = [r["start"] + (r["end"] - r["start"]) / 2 for r in p["series"]]
        flagged = {s["issue_type"] for s in spikes if s["product_id"] == p["product_id"]}
        top = [i["issue_type"] for i in sorted(p["issues"], key=lambda i: -i["count"])[:TOP_ISSUES]]
        for issue in [i for i in used if i in flagged or i in top]:
            if not any(r["issues"].get(issue) for r in p["series"]):
                continue
            ys = [
                100 * r["issues"].get(issue, 0) / r["messages"] if r["messages"] else float("nan")
                for r in p["series"]
            ]
            ax.plot(
                mids,
                ys,
                marker="o",
                markersize=3.5,
                linewidth=3.0 if issue in flagged else 1.3,
                color=colors[issue],
                label=t.get(issue, issue) + (t["spike"] if issue in flagged else ""),
            )
        for s in spikes:
            if s["product_id"] == p["product_id"]:
                ax.axvspan(s["window_start"], s["window_end"], color="red", alpha=0.08)
        if p["series"]:  # every week, even where a week has no point to draw
            ax.set_xlim(p["series"][0]["start"], p["series"][-1]["end"])
        ax.set_xticks([r["end"] for r in p["series"]])
        ax.xaxis.set_major_formatter(DateFormatter("%b %d"))
        ax.set_title(f"{p['product_id']} (n={p['messages']})", fontsize=10)
        ax.set_ylabel(t["week_axis"])
        ax.set_ylim(bottom=0)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle(title + t["weeks_end"])
    return fig


PRODUCT_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Product quality report",
        "period": "Period: {period}. Messages with a product id (reviews and tickets "
        "together), effective labels (agent-corrected where corrected). Shares are of a "
        "product's messages; a message can have several issue types.",
        "spikes": "Spikes",
        "test": "Test: {test}. Recent window: the last {window_days} days before the end; "
        "baseline: the {baseline_days} days before that; issue types with at least "
        "{min_count} recent messages are tested; flagged when the adjusted p-value < "
        "{alpha} (prior weight {prior_weight}).",
        "spike_head": "| product | issue type | recent | recent share | expected share | "
        "baseline | p-value | adjusted |",
        "examples": "Examples (newest first):",
        "no_spike": "No spike flagged.",
        "products": "Products",
        "no_products": "No messages with a product id in this period.",
        "mix_title": "Issue mix per product",
        "trends_title": "Weekly issue shares",
        "product_head": "| product | messages | reviews | tickets | negative | mean ★ | "
        "languages | top issues |",
        "busiest": "The trend chart shows the {n} busiest products.",
        "glossary": "Issue types",
        "no_font": "",
        "no_issue": "(no issue)",
        "mix_axis": "% of the product's labels",
        "week_axis": "% of the week's messages",
        "spike": " (spike)",
        "weeks_end": " (weeks ending on the dates shown)",
    },
    "zh": {
        "title": "商品质量报告",
        "period": "时间段：{period}。带商品编号的消息（评价和工单合计），采用生效标签（客服修正过的"
        "以修正为准）。占比指占该商品消息的比例；一条消息可有多个问题类型。",
        "spikes": "异常上升",
        "test": "检验：{test}。近期窗口：截止前 {window_days} 天；基线：再往前 {baseline_days} 天；"
        "近期至少 {min_count} 条消息的问题类型参与检验；校正后 p 值 < {alpha} 时标记"
        "（先验权重 {prior_weight}）。",
        "spike_head": "| 商品 | 问题类型 | 近期 | 近期占比 | 预期占比 | 基线 | p 值 | 校正后 |",
        "examples": "示例（最新在前）：",
        "no_spike": "未发现异常上升。",
        "products": "商品",
        "no_products": "该时间段内没有带商品编号的消息。",
        "mix_title": "各商品问题构成",
        "trends_title": "每周问题占比",
        "product_head": "| 商品 | 消息 | 评价 | 工单 | 负面 | 平均星级 | 语言 | 主要问题 |",
        "busiest": "趋势图只显示消息最多的 {n} 个商品。",
        "glossary": "问题类型",
        "no_font": "图表使用英文标签：未安装中文字体（例如 fonts-wqy-microhei）。",
        "no_issue": "（无问题）",
        "mix_axis": "占该商品标签 %",
        "week_axis": "占当周消息 %",
        "spike": "（异常）",
        "weeks_end": "（以所示日期为周末）",
    },
}


def product_texts(taxonomy: Taxonomy | None, lang: str) -> dict[str, str]:
    """The products report's texts in ``lang`` and the issue types' display names."""
    texts = dict(PRODUCT_TEXTS["zh" if lang == "zh" else "en"])
    if taxonomy is not None and "issue_type" in taxonomy:
        texts.update(taxonomy["issue_type"].label_display(lang))
    return texts


def products_report(
    session: Session,
    out: Path,
    since: datetime,
    until: datetime,
    cfg: SpikeConfig,
    issue_types: list[str] | None = None,
    min_messages: int = 1,
    taxonomy: Taxonomy | None = None,
    lang: str = "en",
) -> dict[str, Any]:
    """Write ``report.md``, ``issue_mix.png`` and ``trends.png`` under ``out``, in
    English or Chinese (``lang``): issue types by their display names in ``taxonomy``,
    with its definitions at the end."""
    out.mkdir(parents=True, exist_ok=True)
    data = all_products(
        session,
        since,
        until,
        cfg,
        issue_types,
        sort="messages",
        min_messages=min_messages,
        bucket="week",
        series=True,
    )
    products = data["products"]
    spikes = sorted(
        (s for p in products for s in p["spikes"]), key=lambda s: (s["p_value"], s["product_id"])
    )
    t = product_texts(taxonomy, lang)
    drawn = chart_lang(lang)
    ct = product_texts(taxonomy, drawn)
    period = f"{since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC"
    files = []
    if products:
        with chart_fonts(drawn):
            issue_mix_chart(products, out / "issue_mix.png", f"{ct['mix_title']}, {period}", ct)
            trends_chart(
                products, spikes, out / "trends.png", f"{ct['trends_title']}, {period}", ct
            )
        files = ["issue_mix.png", "trends.png"]
    md = [f"# {t['title']}\n", t["period"].format(period=period) + "\n", f"## {t['spikes']}\n"]
    md.append(t["test"].format(**data["spike_test"]) + "\n")
    if spikes:
        md.append(t["spike_head"] + "\n|---|---|---|---|---|---|---|---|")
        for s in spikes:
            md.append(
                f"| {s['product_id']} | {t.get(s['issue_type'], s['issue_type'])} | "
                f"{s['count']}/{s['messages']} | "
                f"{_fmt(s['share'], pct=True)} | {_fmt(s['expected_share'], pct=True)} | "
                f"{s['baseline_count']}/{s['baseline_messages']} | {s['p_value']:.2g} | "
                f"{s['p_adjusted']:.2g} |"
            )
        md.append("")
        for s in spikes:
            issue = t.get(s["issue_type"], s["issue_type"])
            md.append(f"### {s['product_id']}: {issue}\n\n{t['examples']}\n")
            for e in s.get("examples", []):
                stars = f", {e['rating']}★" if e["rating"] else ""
                md.append(
                    f"- {e['received_at']:%Y-%m-%d} ({e['channel']}, {e['lang']}{stars}): "
                    f"“{_md_text(e['text'])}”"
                )
            md.append("")
    else:
        md.append(t["no_spike"] + "\n")
    md.append(f"## {t['products']}\n")
    if not products:
        md.append(t["no_products"] + "\n")
    else:
        if drawn != lang:
            md.append(t["no_font"] + "\n")
        md.append(f"![{ct['mix_title']}](issue_mix.png)\n")
        md.append(f"![{ct['trends_title']}](trends.png)\n")
        md.append(t["product_head"] + "\n|---|---|---|---|---|---|---|---|")
        for p in products:
            top = sorted((i for i in p["issues"] if i["count"]), key=lambda i: -i["count"])[:3]
            md.append(
                f"| {p['product_id']} | {p['messages']} | {p['reviews']} | {p['tickets']} | "
                f"{_fmt(p['negative_share'], pct=True)} | {_fmt(p['mean_rating'])} | "
                + ", ".join(f"{k} {v}" for k, v in p["languages"].items())
                + " | "
                + ", ".join(
                    f"{t.get(i['issue_type'], i['issue_type'])} {i['count']} "
                    f"({_fmt(i['share'], pct=True)})"
                    for i in top
                )
                + " |"
            )
        if len(products) > MAX_TREND_PANELS:
            md.append("\n" + t["busiest"].format(n=MAX_TREND_PANELS))
    if taxonomy is not None and "issue_type" in taxonomy:
        md.append(f"\n## {t['glossary']}\n")
        md += [
            f"- **{label.display(lang)}** (`{label.name}`): {label.definition_in(lang)}"
            for label in taxonomy["issue_type"].labels
        ]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return {
        "report": out / "report.md",
        "charts": [out / f for f in files],
        "products": len(products),
        "spikes": spikes,
        "lang": lang,
        "charts_lang": drawn,
    }


# -- KPIs -------------------------------------------------------------------------------


KPI_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "first_response": "First-response time",
        "sla_met": "First response within the SLA",
        "per_agent": "per agent",
        "per_queue": "per queue",
        "median": "median",
        "p90": "p90",
        "hours": "hours to first response",
        "sla_pct": "SLA met %",
    },
    "zh": {
        "first_response": "首次响应时间",
        "sla_met": "按时首次响应",
        "per_agent": "按客服",
        "per_queue": "按队列",
        "median": "中位数",
        "p90": "p90",
        "hours": "首次响应小时数",
        "sla_pct": "按时响应 %",
    },
}


def _hours_chart(ax, rows: list[dict[str, Any]], key: str, title: str, t: dict) -> None:
    names = [r[key] for r in rows]
    med = [r["first_response_hours_median"] or 0.0 for r in rows]
    p90 = [r["first_response_hours_p90"] or 0.0 for r in rows]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], med, width=0.4, label=t["median"], color="tab:blue")
    ax.bar([x + 0.2 for x in xs], p90, width=0.4, label=t["p90"], color="tab:orange")
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_ylim(0, 1.25 * max([*p90, *med, 1.0]))  # headroom for the legend
    ax.set_ylabel(t["hours"])
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper left", ncols=2)


def _sla_chart(ax, rows: list[dict[str, Any]], key: str, title: str, t: dict) -> None:
    names = [r[key] for r in rows]
    met = [r["sla_met_pct"] for r in rows]
    bars = ax.bar(names, [m or 0.0 for m in met], color="tab:green")
    for bar, m in zip(bars, met, strict=True):
        label = "–" if m is None else f"{m:.0f}%"
        ax.text(bar.get_x() + bar.get_width() / 2, (m or 0) + 1, label, ha="center", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel(t["sla_pct"])
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)


def kpi_figure(
    kind: str,
    agents: list[dict[str, Any]],
    queues: list[dict[str, Any]],
    period: str,
    lang: str = "en",
) -> Figure:
    """Per agent and per queue, side by side: ``first_response`` (median and p90 hours)
    or ``sla_met`` (share answered by the deadline); texts in ``lang`` (draw a Chinese
    one inside ``model.charts.chart_fonts``)."""
    t = KPI_TEXTS["zh" if lang == "zh" else "en"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    chart = {"first_response": _hours_chart, "sla_met": _sla_chart}[kind]
    chart(a1, agents, "agent", t["per_agent"], t)
    chart(a2, queues, "queue", t["per_queue"], t)
    fig.suptitle(f"{t[kind]}, {period}")
    return fig


def kpis_report(
    session: Session,
    out: Path,
    since: datetime,
    until: datetime,
    now: datetime,
    queues: list[str],
) -> dict[str, Any]:
    """Write ``report.md``, ``first_response.png`` and ``sla_met.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    agents = agent_stats(session, since, until, now)
    kpis = [q for q in queue_kpis(session, queues, since, until, now) if q["tickets_handled"]]
    period = f"{since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC"
    files = []
    if agents or kpis:
        kpi_figure("first_response", agents, kpis, period).savefig(
            out / "first_response.png", dpi=110
        )
        kpi_figure("sla_met", agents, kpis, period).savefig(out / "sla_met.png", dpi=110)
        files = ["first_response.png", "sla_met.png"]
    md = [
        f"# Support KPIs\n\nPeriod: {period}. Tickets with an agent action (reply, "
        "resolve, no-response-needed) in the period. First response = first reply − "
        "message received; SLA met = first reply (or no-response-needed) by the deadline; "
        "reopened = resolutions that a customer's follow-up reopened in the period.\n"
    ]
    if files:
        md.append("![First-response time](first_response.png)\n")
        md.append("![SLA met](sla_met.png)\n")
    cols = (
        "tickets handled",
        "first response median h",
        "p90 h",
        "resolution median h",
        "SLA met %",
        "reopened",
    )
    keys = (
        "tickets_handled",
        "first_response_hours_median",
        "first_response_hours_p90",
        "resolution_hours_median",
        "sla_met_pct",
        "reopened",
    )
    for title, rows, key, extra in (
        ("Agents", agents, "agent", ("labels corrected", "labels_corrected")),
        ("Queues", kpis, "queue", None),
    ):
        md.append(f"## {title}\n")
        if not rows:
            md.append("Nothing in this period.\n")
            continue
        head = [key, *cols] + ([extra[0]] if extra else [])
        if title == "Queues":
            head.append("late 7/30/90 d")
        md.append("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for r in rows:
            cells = [str(r[key])] + [_fmt(r[k], digits=1) for k in keys]
            if extra:
                cells.append(str(r[extra[1]]))
            if title == "Queues":
                cells.append(
                    " / ".join(_fmt(v, pct=True) for v in r["late_response_rate"].values())
                )
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return {
        "report": out / "report.md",
        "charts": [out / f for f in files],
        "agents": len(agents),
        "queues": len(kpis),
    }


def parse_day(value: str, end: bool = False) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC; as an end, the next midnight: the day is included)
    or an ISO date-time (naive = UTC)."""
    from serving.store import as_utc

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r}: expected YYYY-MM-DD or an ISO date-time") from exc
    if len(value) == 10 and end:
        parsed += timedelta(days=1)
    return as_utc(parsed)
