"""The labelled corpus in the default taxonomy: its deterministic draw and its splits.

The corpus (``data/labels/corpus.csv``) holds texts read from the public sources in
``$CARELENS_DATA`` and labelled by people for all three tasks (``data/labels/README.md``
says how). This module draws the texts to annotate and fixes each row's split:

- the **draw** (``carelens data draw``): per source a seeded sample
  (``random.Random(DRAW_SEED)``) over the rows in file order, stratified where the
  plan says so (Amazon by star rating, over-sampling one to three stars; Chinese
  online shopping per product category, over-sampling negatives); texts whose
  normalised form repeats are drawn once;
- the **splits**: by the same text hash as every other split (``three_way_split`` with
  ``VAL_FRACTION`` and ``DEV_FRACTION``): the lowest 10% of the hash range are dev rows
  (calibration, thresholds), the next 20% test rows (never trained, calibrated or tuned
  on), the rest training rows. The public sources drop every corpus row (by id, and by
  normalised text within the source: ``exclude`` in the mapping files), so their labels
  never compete with the corpus's on the same text and no corpus test text reaches
  training through a source.

The corpus file holds ids, provenance and labels, never the texts: they are read from
the public data when the corpus is loaded (``load_corpus``), so nothing of
``$CARELENS_DATA`` is copied into the repository. ``data/labels/annotation/`` keeps
both annotation passes and the adjudications (``build_corpus`` makes the corpus from
them and measures the agreement).
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import normalise_for_hash, split_bucket
from training.sources import REPO_DATA_DIR, SourceMapping, available_sources, data_dir, source_rows

CORPUS_FILE = REPO_DATA_DIR / "labels" / "corpus.csv"
ANNOTATION_DIR = REPO_DATA_DIR / "labels" / "annotation"
DRAW_SEED = 20261203
# held out: the lowest 30% of the text-hash range; a third of those (10% of all) dev rows
VAL_FRACTION = 0.3
DEV_FRACTION = 1 / 3


@dataclass(frozen=True)
class Stratum:
    """``n`` rows of ``source`` whose CSV ``column`` values are in ``values`` (all if None)
    and, with ``match``, whose text the regular expression finds (case-insensitive): a
    way to find rows worth reading, never a label."""

    source: str
    n: int
    where: dict[str, tuple[str, ...]] | None = None
    match: str | None = None


def _stratified(source: str, column: str, counts: dict[str, int]) -> list[Stratum]:
    return [Stratum(source, n, {column: (value,)}) for value, n in counts.items()]


_SHOP_CATEGORIES = ("书籍", "平板", "手机", "水果", "洗发水", "热水器", "蒙牛", "衣服", "计算机")


def _per_shop_category(negative: int, positive: int) -> list[Stratum]:
    """``negative`` and ``positive`` online-shopping reviews of each product category."""
    return [
        Stratum("chinese_online_shopping", n, {"cat": (cat,), "label": (label,)})
        for cat in _SHOP_CATEGORIES
        for n, label in ((negative, "0"), (positive, "1"))
    ]


PLAN: tuple[Stratum, ...] = (
    # Amazon reviews: every one-, two- and three-star review (98 + 101 + 355), the rest
    # four and five stars (the file is 89% four or five stars)
    *_stratified("amazon_reviews", "overall", {"1": 98, "2": 101, "3": 355, "4": 600, "5": 846}),
    Stratum("twitter_airline", 800),
    Stratum("xci_complaints", 800),
    Stratum("bitext_customer_support", 600),
    Stratum("banking77", 200),
    # Chinese online shopping: 100 per product category of the file (nine), 65 of them
    # negative, and 100 more negative reviews of any category
    *_per_shop_category(65, 35),
    Stratum("chinese_online_shopping", 100, {"label": ("0",)}),
    Stratum("chinese_waimai", 180, {"label": ("0",)}),
    Stratum("chinese_waimai", 120, {"label": ("1",)}),
    Stratum("chinese_chnsenticorp_htl", 180, {"label": ("0",)}),
    Stratum("chinese_chnsenticorp_htl", 120, {"label": ("1",)}),
)


# The targeted supplement: rows a plain draw almost never reaches (a safety hazard, a
# wrong item, damage in transit, a size problem are a few in a thousand reviews), found
# by words that make them likely and then read and labelled like every other row.
# Drawn after PLAN with the same generator, so PLAN's rows do not change.
_SAFETY_EN = (
    r"\b(fire|flames?|smok(e|ed|ing)|sparks?|sparked|melt(ed|ing)?|burn(ed|t|s)? (my|me|his|her)"
    r"|burn(ed|t)? (out|up)|electrocut\w*|(electric|got a|gave me a) shocks?|shocked me"
    r"|overheat\w*|hazard\w*|dangerous|unsafe|injur\w*|allerg\w*|rash|blister\w*)\b"
)
_WRONG_EN = (
    r"(wrong (item|one|size|colou?r|model|part|product|version)|not what i ordered"
    r"|sent (me )?(a|the) (wrong|different)|received (a|the) (wrong|different)"
    r"|missing (a |the )?(part|piece|screw|cable|item)s?|(part|piece)s? (were|was) missing)"
)
_DAMAGE_EN = (
    r"(arrived (broken|damaged|cracked|dented|scratched|smashed)|broken (on|upon) arrival"
    r"|(box|package|packaging) was (crushed|damaged|torn|smashed)|dead on arrival|\bDOA\b"
    r"|(came|showed up) (broken|damaged|cracked))"
)
_SIZE_EN = (
    r"(too (small|big|large|tight|loose|short|long|narrow|wide)|does(n't| not) fit"
    r"|did(n't| not) fit|runs (small|large|big)|too bulky)"
)
_FLIGHT_SAFETY_EN = r"\b(unsafe|safety|emergency|smoke|fire|injur\w*|hurt|medical)\b"
_SAFETY_ZH = r"(漏电|触电|电到|着火|起火|失火|冒烟|烧焦|烧坏|爆炸|炸了|烫伤|烫手|过热|过敏|红肿|危险|中毒|拉肚子|吃坏|异物|虫子|变质|发霉)"
_WRONG_ZH = r"(发错|错发|少发|漏发|发成|不是我(要|买|订)的|颜色不对|型号不对|缺少|少了(一|个|件))"
_DAMAGE_ZH = r"(破损|碎了|摔坏|压坏|压扁|裂了|坏的|漏水|磕坏|变形)"
_SIZE_ZH = r"(尺码|偏小|偏大|太小|太大|太短|太长|不合身|码数|小了|大了)"
SUPPLEMENT: tuple[Stratum, ...] = (
    Stratum("amazon_reviews", 60, match=_SAFETY_EN),
    Stratum("amazon_reviews", 40, match=_WRONG_EN),
    Stratum("amazon_reviews", 40, match=_DAMAGE_EN),
    Stratum("amazon_reviews", 40, match=_SIZE_EN),
    Stratum("twitter_airline", 20, match=_FLIGHT_SAFETY_EN),
    Stratum("chinese_online_shopping", 70, match=_SAFETY_ZH),
    Stratum("chinese_online_shopping", 40, match=_WRONG_ZH),
    Stratum("chinese_online_shopping", 40, match=_DAMAGE_ZH),
    Stratum("chinese_online_shopping", 40, match=_SIZE_ZH),
    Stratum("chinese_waimai", 30, match=_SAFETY_ZH),
    Stratum("chinese_chnsenticorp_htl", 20, match=_SAFETY_ZH),
)
# its annotation batches, numbered after PLAN's
SUPPLEMENT_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("amazon_reviews", "twitter_airline"), 1),
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 2),
)

# The second round: what a triage gets wrong when words and meaning part ways, and the
# urgency a Chinese review rarely states outright. Praise words in a complaint ("thanks
# for nothing", 真是太快了 about a month's wait), negated complaints ("no problems",
# "didn't break"), a threat to leave a bad review or return the item, a delivery hours
# late, and the lukewarm review (还行, 一般) between praise and complaint.
_PRAISE_WORDS_EN = (
    r"\b(thanks?( you)?( so much| a lot| for nothing)?|great|love|awesome|amazing|wonderful"
    r"|perfect|best|nice|brilliant|fantastic|appreciate\w*|impressive|well done|good job)\b"
)
_NEGATED_EN = (
    r"(not bad|no (complaints?|problems?|issues?)|never had (a|any) (problem|issue)"
    r"|(didn't|did not|doesn't|does not|won't|hasn't|haven't) (break|disappoint|fail|stop)"
    r"|can't complain|nothing wrong|without (any )?(problems?|issues?)|not (too|that) "
    r"(expensive|hard|difficult|loud|heavy))"
)
_PRAISE_WORDS_ZH = r"(呵呵|真是(太)?好|真(行|棒|快|好|不错)|谢谢(你们|商家|卖家|客服)|太(棒|好|快)了|服了|佩服|厉害|感动)"
_ACT_NOW_ZH = (
    r"(差评|再也不|不会再|投诉|退货|退款|换货|骗子?|假货|催|几天了|还没(到|收到|发货)"
    r"|联系不上|不理|没人(回|理))"
)
_LATE_FOOD_ZH = (
    r"(两个(多)?小时|一个(多)?小时|催|超时|送错|漏送|少送|凉了|洒了|撒了|差评|再也不|投诉|退款)"
)
_LUKEWARM_ZH = r"(还行|一般|凑合|中规中矩|还可以|马马虎虎|说得过去|不好不坏)"
SUPPLEMENT_2: tuple[Stratum, ...] = (
    Stratum("twitter_airline", 120, {"airline_sentiment": ("negative",)}, _PRAISE_WORDS_EN),
    Stratum("xci_complaints", 60, match=_PRAISE_WORDS_EN),
    Stratum("amazon_reviews", 60, {"overall": ("4", "5")}, _NEGATED_EN),
    Stratum("chinese_online_shopping", 70, {"label": ("0",)}, _PRAISE_WORDS_ZH),
    Stratum("chinese_online_shopping", 100, match=_ACT_NOW_ZH),
    Stratum("chinese_online_shopping", 60, match=_LUKEWARM_ZH),
    Stratum("chinese_waimai", 70, {"label": ("0",)}, _LATE_FOOD_ZH),
)
SUPPLEMENT_2_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("twitter_airline", "xci_complaints", "amazon_reviews"), 1),
    (("chinese_online_shopping", "chinese_waimai"), 2),
)
# The third round: the issue types and urgency levels the earlier rounds left thin.
# English messages outside reviews (complaint tweets to brands, airline tweets that ask
# for a rebooking, a refund or a lost bag), four- and five-star reviews that state a
# con, return something or ask how to use it, more sarcasm, and Chinese reviews about
# delivery, service, refunds, invoices and set-up, mixed reviews (好是好, 但是) between
# praise and complaint, food-delivery and hotel reviews about the booking or the bill.
_AIRLINE_ACTION_EN = (
    r"\b(refund\w*|cancel\w*|rebook\w*|lost|stuck|stranded|missed|on hold|hold time|voucher"
    r"|compensat\w*|bags?|baggage|luggage|reservation|seat|upgrade|fee|charged)\b"
)
_CON_OR_ASK_EN = (
    r"(only (complaint|problem|issue|downside|con)|\bhowever\b|\bwish\b|return(ed|ing)? (it|them)"
    r"|\brefund|\bexchange\b|how (do|can|to)\b|instructions|\bmanual\b|set ?up|customer service"
    r"|\bseller\b|\bshipping\b|\bwarranty\b|\bprice\b|overpriced|\bcharged\b)"
)
_ROUTINE_ZH = (
    r"(快递|物流|发货|客服|售后|发票|价格|降价|差价|退款|退货|换货|怎么(用|装|安装|设置)|说明书|安装"
    r"|激活|账号|订单|取消|赠品|包装)"
)
_MIXED_ZH = r"(但是|不过|就是|可惜|美中不足|缺点|唯一)"
_HOTEL_BOOKING_ZH = r"(前台|预订|预定|订房|携程|发票|押金|退房|入住|加床|价格|房价|结账|收费)"
SUPPLEMENT_3: tuple[Stratum, ...] = (
    Stratum("xci_complaints", 260, {"label": ("1",)}),
    Stratum("twitter_airline", 120, {"airline_sentiment": ("negative",)}, _AIRLINE_ACTION_EN),
    Stratum("twitter_airline", 40, {"airline_sentiment": ("negative",)}, _PRAISE_WORDS_EN),
    Stratum("amazon_reviews", 100, {"overall": ("4", "5")}, _CON_OR_ASK_EN),
    Stratum("chinese_online_shopping", 130, match=_ROUTINE_ZH),
    Stratum("chinese_online_shopping", 70, {"label": ("1",)}, _MIXED_ZH),
    Stratum("chinese_waimai", 60),
    Stratum("chinese_chnsenticorp_htl", 60, match=_HOTEL_BOOKING_ZH),
)
SUPPLEMENT_3_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("xci_complaints", "twitter_airline", "amazon_reviews"), 2),
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 2),
)
# The fourth round: more of the plain messages the test rows score lowest on (airline
# and X-CI tweets at random, Chinese reviews of every kind at random: their issue types,
# their neutral readings and their urgency), and trigger words in harmless or negated use
# ("this amp is fire", "no buzz at all", 没有坏, 不用退) in good reviews.
_TRIGGER_WORDS_EN = (
    r"\b(fire|smok\w*|burn\w*|broke|broken|break\w*|shock\w*|hot|crack\w*|damag\w*|return\w*"
    r"|refund\w*|wrong|missing|loose|buzz\w*|hum|noise|noisy|problems?|issues?|defect\w*|dead)\b"
)
_TRIGGER_WORDS_ZH = r"(坏|破|退|换|投诉|问题|毛病|瑕疵|漏|烫|热|慢|差|假|错|少)"
SUPPLEMENT_4: tuple[Stratum, ...] = (
    Stratum("twitter_airline", 220),
    Stratum("xci_complaints", 180),
    Stratum("amazon_reviews", 100, {"overall": ("4", "5")}, _TRIGGER_WORDS_EN),
    Stratum("chinese_online_shopping", 200),
    Stratum("chinese_online_shopping", 60, {"label": ("1",)}, _TRIGGER_WORDS_ZH),
    Stratum("chinese_waimai", 70),
    Stratum("chinese_chnsenticorp_htl", 70),
)
SUPPLEMENT_4_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("twitter_airline", "xci_complaints", "amazon_reviews"), 2),
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 2),
)
# The fifth round: harm in English, which the earlier rounds found in few rows (a safety
# hazard is a few in a thousand reviews and tweets): every remaining review and tweet with
# a word of heat, shock, injury, illness or a smell, read like every other row (most are
# harmless: "shock mount", "money to burn"); more tweets at random, whose issue types are
# still the weakest; and Chinese reviews with a word of harm, for the model to learn
# hazards from, not the rules alone.
_HARM_EN = rf"{_SAFETY_EN}|" + (
    r"\b(shock\w*|burn\w*|hot to the touch|too hot|caught|explod\w*|chok\w*|cut (my|me)"
    r"|sharp|toxic|fumes?|odou?r|smell\w*|recall\w*|bleed\w*|hurt\w*|pain|ouch|zap\w*"
    r"|sting\w*|poison\w*|sick)\b"
)
SUPPLEMENT_5: tuple[Stratum, ...] = (
    Stratum("amazon_reviews", 110, match=_HARM_EN),
    Stratum("twitter_airline", 50, match=_HARM_EN),
    Stratum("xci_complaints", 10, match=_HARM_EN),
    Stratum("twitter_airline", 150),
    Stratum("xci_complaints", 140),
    Stratum("chinese_online_shopping", 100, match=_SAFETY_ZH),
    Stratum("chinese_waimai", 30, match=_SAFETY_ZH),
    Stratum("chinese_chnsenticorp_htl", 30, match=_SAFETY_ZH),
)
SUPPLEMENT_5_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("xci_complaints", "twitter_airline", "amazon_reviews"), 3),
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 1),
)
# The sixth round: the Chinese neutral class. The Chinese public sources label only
# positive and negative, and the draws before it gave few neutral Chinese rows (235 of 3,020),
# so more lukewarm and plain reviews (一般般, 普通, 中规中矩, 没什么特别) of shopping,
# food delivery and hotels: read, many turn out to lean one way.
_NEUTRAL_ZH = (
    r"(一般般|一般|还行|凑合|中规中矩|还可以|马马虎虎|说得过去|不好不坏|普通|普普通通|没什么特别"
    r"|尚可|过得去|中等|正常|符合描述|和描述(的)?一样|没有(什么)?惊喜|无功无过)"
)
SUPPLEMENT_6: tuple[Stratum, ...] = (
    Stratum("chinese_online_shopping", 150, match=_NEUTRAL_ZH),
    Stratum("chinese_waimai", 30, match=_NEUTRAL_ZH),
    Stratum("chinese_chnsenticorp_htl", 30, match=_NEUTRAL_ZH),
)
SUPPLEMENT_6_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 2),
)
# The seventh round: issue types in English, whose weakest rows are tweets (X-CI and
# airline tweets score lowest): every X-CI tweet no round has drawn yet, and airline
# tweets at random among the negative ones (complaints name what went wrong) and the
# neutral ones (questions about bookings, bags and fees).
SUPPLEMENT_7: tuple[Stratum, ...] = (
    Stratum("xci_complaints", 400),
    Stratum("twitter_airline", 300, {"airline_sentiment": ("negative",)}),
    Stratum("twitter_airline", 100, {"airline_sentiment": ("neutral",)}),
)
SUPPLEMENT_7_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("xci_complaints", "twitter_airline"), 4),
)
# The eighth round: Chinese issue types and urgency, read at random. The Chinese test rows
# are mostly a random draw over the nine shopping categories, food delivery and hotels, and the
# rounds since the first drew Chinese rows by words; this round draws plain reviews again
# (negative ones over-sampled, as PLAN does), about 460 more rows of PLAN's kinds.
SUPPLEMENT_8: tuple[Stratum, ...] = (
    *_per_shop_category(25, 8),
    Stratum("chinese_waimai", 60, {"label": ("0",)}),
    Stratum("chinese_waimai", 30, {"label": ("1",)}),
    Stratum("chinese_chnsenticorp_htl", 60, {"label": ("0",)}),
    Stratum("chinese_chnsenticorp_htl", 30, {"label": ("1",)}),
)
SUPPLEMENT_8_BATCHES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 4),
)
# The ninth round: the same draw again, after the eighth round's rows.
SUPPLEMENT_9: tuple[Stratum, ...] = SUPPLEMENT_8
SUPPLEMENT_9_BATCHES = SUPPLEMENT_8_BATCHES
# every round: its strata, its batches and its key file, drawn in this order after PLAN
SUPPLEMENTS: tuple[
    tuple[tuple[Stratum, ...], tuple[tuple[tuple[str, ...], int], ...], str], ...
] = (
    (SUPPLEMENT, SUPPLEMENT_BATCHES, "key_supplement.json"),
    (SUPPLEMENT_2, SUPPLEMENT_2_BATCHES, "key_supplement2.json"),
    (SUPPLEMENT_3, SUPPLEMENT_3_BATCHES, "key_supplement3.json"),
    (SUPPLEMENT_4, SUPPLEMENT_4_BATCHES, "key_supplement4.json"),
    (SUPPLEMENT_5, SUPPLEMENT_5_BATCHES, "key_supplement5.json"),
    (SUPPLEMENT_6, SUPPLEMENT_6_BATCHES, "key_supplement6.json"),
    (SUPPLEMENT_7, SUPPLEMENT_7_BATCHES, "key_supplement7.json"),
    (SUPPLEMENT_8, SUPPLEMENT_8_BATCHES, "key_supplement8.json"),
    (SUPPLEMENT_9, SUPPLEMENT_9_BATCHES, "key_supplement9.json"),
)


@dataclass
class DrawnRow:
    id: str
    source: str
    lang: str
    text: str
    rating: str = ""
    product_id: str = ""
    customer_id: str = ""


def _source_rows(
    name: str, data_root: str | Path | None
) -> Iterator[tuple[dict[str, str], DrawnRow]]:
    mapping = SourceMapping.load(available_sources()[name])
    for _, row, text, rid in source_rows(mapping, data_dir(data_root) / mapping.path):
        meta = {k: row.get(col) or "" for k, col in mapping.meta.items()}
        yield (
            row,
            DrawnRow(
                id=rid,
                source=mapping.source,
                lang=mapping.lang,
                text=text,
                rating=meta.get("rating", ""),
                product_id=meta.get("product_id", ""),
                customer_id=meta.get("customer_id", ""),
            ),
        )


def draw(data_root: str | Path | None = None, plan: tuple[Stratum, ...] = PLAN) -> list[DrawnRow]:
    """The texts to annotate, the same for the same data and plan on every machine."""
    rng = random.Random(DRAW_SEED)
    cache: dict[str, list[tuple[dict[str, str], DrawnRow]]] = {}
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    out: list[DrawnRow] = []
    for stratum in plan:
        if stratum.source not in cache:
            cache[stratum.source] = list(_source_rows(stratum.source, data_root))
        found = re.compile(stratum.match, re.IGNORECASE).search if stratum.match else None
        pool = [
            drawn
            for row, drawn in cache[stratum.source]
            if all(row.get(col) in values for col, values in (stratum.where or {}).items())
            and (found is None or found(drawn.text))
            and drawn.id not in seen_ids
            and normalise_for_hash(drawn.text) not in seen_texts
        ]
        order = list(range(len(pool)))
        rng.shuffle(order)
        taken = 0
        for i in order:
            if taken == stratum.n:
                break
            drawn = pool[i]
            key = normalise_for_hash(drawn.text)
            if key in seen_texts or not key:
                continue
            seen_ids.add(drawn.id)
            seen_texts.add(key)
            out.append(drawn)
            taken += 1
    return out


def corpus_split(text: str) -> str:
    """``train``, ``dev`` or ``test`` for a corpus text (fixed by the text's hash, as
    ``three_way_split(rows, VAL_FRACTION, DEV_FRACTION)`` splits)."""
    b = split_bucket(text)
    if b >= VAL_FRACTION:
        return "train"
    return "dev" if b < VAL_FRACTION * DEV_FRACTION else "test"


# -- annotation: batches out, passes in ------------------------------------------------

TASKS = ("issue_type", "sentiment", "urgency")
# annotation batches: sources read together (one domain per batch) and how many batches
BATCH_GROUPS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("amazon_reviews",), 6),
    (("twitter_airline",), 2),
    (("xci_complaints",), 2),
    (("bitext_customer_support", "banking77"), 2),
    (("chinese_online_shopping", "chinese_waimai", "chinese_chnsenticorp_htl"), 4),
)


def write_batches(
    rows: list[DrawnRow],
    out_dir: str | Path,
    groups: tuple[tuple[tuple[str, ...], int], ...] = BATCH_GROUPS,
    first_batch: int = 1,
    key_name: str = "key.json",
) -> dict[str, dict[str, str]]:
    """``batchNN.jsonl`` files for annotators (short id, text, stars; nothing else: no
    source, no source label) and the key from short ids to each row's id, source,
    language and rating (returned, and written as ``key_name``)."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    key: dict[str, dict[str, str]] = {}
    b = first_batch - 1
    for sources, n_batches in groups:
        sel = [r for r in rows if r.source in sources]
        rng.shuffle(sel)
        for k in range(n_batches):
            b += 1
            with (out_dir / f"batch{b:02d}.jsonl").open("w", encoding="utf-8") as fh:
                for i, r in enumerate(sel[k::n_batches], 1):
                    sid = f"{b:02d}-{i:03d}"
                    key[sid] = {"id": r.id, "source": r.source, "lang": r.lang, "rating": r.rating}
                    rec: dict[str, Any] = {"id": sid, "text": r.text}
                    if r.rating:
                        rec["stars"] = int(float(r.rating))
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (out_dir / key_name).write_text(json.dumps(key, ensure_ascii=False), encoding="utf-8")
    return key


def draw_supplement(data_root: str | Path | None = None, round: int = 1) -> list[DrawnRow]:
    """The rows of supplement ``round`` (1 for ``SUPPLEMENT``, 2 for ``SUPPLEMENT_2``),
    drawn after PLAN's and the earlier rounds' with the same generator."""
    if not 1 <= round <= len(SUPPLEMENTS):
        raise ValueError(f"supplement round must be 1 to {len(SUPPLEMENTS)}, got {round}")
    before = PLAN + tuple(s for strata, _, _ in SUPPLEMENTS[: round - 1] for s in strata)
    drawn = draw(data_root, before + SUPPLEMENTS[round - 1][0])
    return drawn[len(draw(data_root, before)) :]


def supplement_first_batch(round: int) -> int:
    """The number of supplement ``round``'s first batch: after PLAN's and earlier rounds'."""
    return (
        1
        + sum(n for _, n in BATCH_GROUPS)
        + sum(n for _, groups, _ in SUPPLEMENTS[: round - 1] for _, n in groups)
    )


Labels = dict[str, Any]  # issue_type: tuple of labels (sorted); sentiment, urgency: str


def read_pass(path: str | Path, taxonomy) -> dict[str, Labels]:
    """An annotator's file: ``id<TAB>issue_types<TAB>sentiment<TAB>urgency`` per line
    (``-`` for no issue type, ``|`` between several). Refuses unknown labels and
    repeated ids, naming the line."""
    out: dict[str, Labels] = {}
    path = Path(path)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 tab-separated fields, got {len(parts)}")
        sid, issues, sentiment, urgency = parts
        if sid in out:
            raise ValueError(f"{path}:{lineno}: id {sid} appears twice")
        labels = {
            "issue_type": tuple(sorted(x for x in issues.split("|") if x and x != "-")),
            "sentiment": sentiment,
            "urgency": urgency,
        }
        for task in TASKS:
            values = labels[task] if task == "issue_type" else (labels[task],)
            bad = [v for v in values if v not in taxonomy[task].label2id]
            if bad:
                raise ValueError(f"{path}:{lineno}: {task} label {bad[0]!r} is not in the taxonomy")
        out[sid] = labels
    return out


def disputed(a: Labels, b: Labels) -> list[str]:
    """The tasks two passes label differently."""
    return [t for t in TASKS if a[t] != b[t]]


def jaccard(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    if not a and not b:
        return 1.0
    return len(set(a) & set(b)) / len(set(a) | set(b))


def agreement(pairs: list[tuple[Labels, Labels]], taxonomy) -> dict[str, Any]:
    """Inter-annotator agreement of two passes over the same rows: Cohen's kappa for
    sentiment, linearly weighted kappa for urgency (ordered), mean Jaccard of the
    issue-type sets, and the share of rows with the same labels."""
    from sklearn.metrics import cohen_kappa_score

    out: dict[str, Any] = {"rows": len(pairs)}
    if not pairs:
        return out
    for task, weights in (("sentiment", None), ("urgency", "linear")):
        order = taxonomy[task].label_names
        ya = [order.index(a[task]) for a, _ in pairs]
        yb = [order.index(b[task]) for _, b in pairs]
        same = sum(x == y for x, y in zip(ya, yb, strict=True)) / len(pairs)
        if len(set(ya) | set(yb)) < 2:
            kappa = 1.0
        else:
            kappa = float(
                cohen_kappa_score(ya, yb, weights=weights, labels=list(range(len(order))))
            )
        out[task] = {"kappa": round(kappa, 3), "agreement": round(same, 3)}
    out["issue_type"] = {
        "mean_jaccard": round(
            sum(jaccard(a["issue_type"], b["issue_type"]) for a, b in pairs) / len(pairs), 3
        ),
        "agreement": round(
            sum(a["issue_type"] == b["issue_type"] for a, b in pairs) / len(pairs), 3
        ),
    }
    return out


# -- the corpus file -----------------------------------------------------------------

CORPUS_COLUMNS = ("id", "source", "lang", "rating", "issue_type", "sentiment", "urgency")


def _final(a: Labels, b: Labels, adjudicated: Labels | None, where: str) -> Labels:
    tasks = disputed(a, b)
    if tasks and adjudicated is None:
        raise ValueError(f"{where}: the passes disagree on {', '.join(tasks)} and no adjudication")
    return {t: (adjudicated[t] if t in tasks else a[t]) for t in TASKS}


def build_corpus(
    taxonomy,
    annotation_dir: str | Path = ANNOTATION_DIR,
    data_root: str | Path | None = None,
    partial: bool = False,
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The corpus rows (``CORPUS_COLUMNS``) from the two passes and the adjudications in
    ``annotation_dir`` (``key.json``, ``passA/``, ``passB/``, ``adjudicated/``), and the
    figures: agreement per source and task, disputed rows, label counts."""
    import json
    from collections import Counter, defaultdict

    root = Path(annotation_dir)
    key: dict[str, dict[str, str]] = {}
    for f in sorted(root.glob("key*.json")):  # key.json, then the supplement's
        key.update(json.loads(f.read_text(encoding="utf-8")))
    texts = _texts({k["source"] for k in key.values()}, data_root)
    adjudicated: dict[str, Labels] = {}
    for f in sorted((root / "adjudicated").glob("*.tsv")):
        adjudicated.update(read_pass(f, taxonomy))
    pass_a: dict[str, Labels] = {}
    pass_b: dict[str, Labels] = {}
    for f in sorted((root / "passA").glob("*.tsv")):
        pass_a.update(read_pass(f, taxonomy))
    for f in sorted((root / "passB").glob("*.tsv")):
        pass_b.update(read_pass(f, taxonomy))
    rows: list[dict[str, str]] = []
    pairs: dict[str, list[tuple[Labels, Labels]]] = defaultdict(list)
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    n_disputed: Counter = Counter()
    n_awaiting = 0
    for sid, row in key.items():
        if sid not in pass_a or sid not in pass_b:
            continue  # not annotated (yet): left out of the corpus
        rid = row["id"]
        a, b = pass_a[sid], pass_b[sid]
        pairs[row["source"]].append((a, b))
        pairs[row["lang"]].append((a, b))
        n_disputed[row["source"]] += bool(disputed(a, b))
        if partial and disputed(a, b) and sid not in adjudicated:
            n_awaiting += 1
            continue
        final = _final(a, b, adjudicated.get(sid), f"{sid} ({rid})")
        for t in TASKS:
            for v in final[t] if t == "issue_type" else [final[t]]:
                counts[row["source"]][t][v] += 1
            if t == "issue_type" and not final[t]:
                counts[row["source"]][t]["-"] += 1
        rows.append(
            {
                "id": rid,
                "source": row["source"],
                "lang": row["lang"],
                "rating": str(int(float(row["rating"]))) if row["rating"] else "",
                "issue_type": "|".join(final["issue_type"]) or "-",
                "sentiment": final["sentiment"],
                "urgency": final["urgency"],
            }
        )
    stats = {
        "rows": len(rows),
        "awaiting_adjudication": n_awaiting,
        "agreement": {k: agreement(v, taxonomy) for k, v in sorted(pairs.items())},
        "disputed_rows": dict(sorted(n_disputed.items())),
        "label_counts": {
            s: {t: dict(c.most_common()) for t, c in tc.items()} for s, tc in sorted(counts.items())
        },
        "splits": dict(Counter(corpus_split(texts[r["source"], r["id"]]) for r in rows)),
    }
    return rows, stats


def write_corpus(rows: list[dict[str, str]], path: str | Path = CORPUS_FILE) -> None:
    with Path(path).open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CORPUS_COLUMNS))
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["source"], r["id"])):
            w.writerow(r)


def _texts(sources, data_root) -> dict[tuple[str, str], str]:
    """(source, id) -> text for every row of ``sources``."""
    out: dict[tuple[str, str], str] = {}
    for source in sorted(sources):
        if source not in available_sources():
            raise ValueError(f"unknown source {source!r}")
        out.update({(source, d.id): d.text for _, d in _source_rows(source, data_root)})
    return out


def load_corpus(path: str | Path, taxonomy, data_root: str | Path | None = None):
    """The corpus as labelled examples: each row's text read from its public source by
    id (``source``, ``lang``, ``rating`` and ``id`` in the meta). A row whose text is
    not in the data is an error naming it."""
    from training.data import DataError, read_labelled

    path = Path(path)
    with path.open(encoding="utf-8", newline="") as fh:
        raw = list(csv.DictReader(fh))
    try:
        texts = _texts({r["source"] for r in raw}, data_root)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc
    import tempfile

    missing = [r["id"] for r in raw if (r["source"], r["id"]) not in texts]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} rows have no text in the public data (first: {missing[0]}); "
            "is CARELENS_DATA the right folder?"
        )
    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "corpus.csv"
        with joined.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["text", *CORPUS_COLUMNS])
            w.writeheader()
            for r in raw:
                w.writerow({**r, "text": texts[r["source"], r["id"]]})
        return read_labelled(joined, taxonomy)
