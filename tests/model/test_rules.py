"""The critical rules: phrases in context fire, trigger words in harmless use do not,
and the Predictor applies them to every prediction."""

from __future__ import annotations

import pytest

from model.predictor import Predictor
from model.rules import RulesError, RuleSet
from model.taxonomy import Taxonomy

FIRES = [
    ("The charger caught fire after two days!", "safety"),
    ("The heater sparked and the plug melted", "safety"),
    ("It started smoking as soon as I plugged it in", "safety"),
    ("This thing burned my hand badly", "safety"),
    ("Gave me an electric shock when I touched the case", "safety"),
    ("My son got food poisoning from it", "safety"),
    ("插头冒烟了，差点着火", "safety"),
    ("充电的时候漏电，电到我了", "safety"),
    ("不新鲜，拉肚子两天了", "safety"),
    ("洗了这个我都过敏了", "safety"),
    ("电源适配器用一会儿就很烫手", "safety"),
    ("I have contacted my lawyer about this", "legal"),
    ("我要找律师起诉你们", "legal"),
    ("We are filing a lawsuit against the seller", "legal"),
    ("I will report you to the FTC", "regulator"),
    ("已经打了12315投诉", "regulator"),
    ("I filed a chargeback with my bank", "chargeback"),
    ("I'm opening an A-to-z claim today", "chargeback"),
    ("There are unauthorized charges on my card", "fraud"),
    ("My account was hacked and someone changed my address", "fraud"),
    ("信用卡被盗刷了", "fraud"),
    ("There is a payment on my card that I didn't make", "fraud"),
    ("饭里吃出了一只苍蝇", "safety"),
    ("垃圾食品吃完中毒啦", "safety"),
    ("洗了过敏，申请退货", "safety"),
    ("搞得我一身过敏，全身都是疙瘩", "safety"),
    ("闻了以后呼吸困难，眼睛红肿", "safety"),
    ("The brakes make a noise and a smoke smell comes out", "safety"),
    ("A shard of glass in the can sliced my mouth", "safety"),
    ("The steering failed on the motorway", "safety"),
    ("汤里有只小蟑螂", "safety"),
    ("吃出个小别针，太危险", "safety"),
    ("拉的我都虚脱了", "safety"),
    ("吃完半夜就进医院了", "safety"),
]

HARMLESS = [
    "The smoke grey colour is lovely",
    "Lawsuit-level good. Kidding, best pillow I've ever owned.",
    "This hoodie is fire",
    "Does this work with the Fire TV stick?",
    "I burned through three audiobooks on the flight",
    "我要投诉快递员，态度太差",
    "a firestick and a bonfire-free design",
    "Shocked at how good this sounds for the price",
    "This amp is smoking hot, love it",
    "Fired up to play this guitar every day",
    "I'd like to dispute nothing, just asking about delivery",
    "炸鸡很好吃，送得也快",
    "很新鲜，吃了也没拉肚子",
    "我是过敏体质，用了这个没过敏",
    "这个事情是个烫手山芋",
    "What do I do if my card was stolen?",
    "吃了不中毒，就是难吃",
    "汤馊了，明天铁定拉肚子",
    "本来想去315投诉，后来太忙就算了",
    "The hotel is a short walk from the hospital",
    "酒店离医院很近，很方便",
    "I cut my losses and bought a better one",
    "面条很好吃，汤也很鲜",
]


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    r = RuleSet.load()
    r.validate(Taxonomy.default())
    return r


@pytest.mark.parametrize("text,rule", FIRES)
def test_phrases_in_context_fire(rules, text, rule):
    hits = rules.hits(text)
    assert rule in [h.rule for h in hits], text
    for h in hits:
        assert text[h.start : h.end] == h.phrase


@pytest.mark.parametrize("text", HARMLESS)
def test_trigger_words_in_harmless_use_do_not_fire(rules, text):
    assert rules.hits(text) == [], text


def test_apply_sets_urgency_and_adds_safety_hazard(rules):
    labels, hits = rules.apply(
        "The charger caught fire", {"issue_type": ["praise"], "urgency": ["low"]}
    )
    assert labels == {"issue_type": ["praise", "safety_hazard"], "urgency": ["critical"]}
    assert [h.rule for h in hits] == ["safety"]


@pytest.mark.parametrize(
    "items,needle",
    [
        ([{"patterns": {"en": ["x"]}}], "needs a name"),
        ([{"name": "r", "patterns": {"en": ["(unclosed"]}}], "bad pattern"),
        ([{"name": "r", "patterns": ["x"]}], "must map languages"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(items, needle):
    with pytest.raises(RulesError, match=needle):
        RuleSet.from_list(items, source="rules.yaml")


def test_rules_that_do_not_fit_the_taxonomy_are_refused():
    bad = RuleSet.from_list(
        [{"name": "r", "patterns": {"en": ["x"]}, "add": {"sentiment": ["negative"]}}]
    )
    with pytest.raises(RulesError, match="multi-label"):
        bad.validate(Taxonomy.default())
    bad = RuleSet.from_list([{"name": "r", "patterns": {"en": ["x"]}, "set": {"urgency": ["now"]}}])
    with pytest.raises(RulesError, match="unknown urgency label"):
        bad.validate(Taxonomy.default())


def test_the_predictor_applies_the_rules(tiny_model_dir):
    pred = Predictor.load(tiny_model_dir)
    text = "Great seller but the charger caught fire."
    out = pred.predict([text])[0]
    assert out["urgency"].labels == ["critical"] and not out["urgency"].needs_review
    assert "safety_hazard" in out["issue_type"].labels
    assert [h.rule for h in out.rule_hits] == ["safety"]
    ev = {e.label: e for e in out["issue_type"].evidence}["safety_hazard"]
    assert text[ev.start : ev.end] == "caught fire"
    assert out.to_dict()["rule_hits"][0]["phrase"] == "caught fire"
    # no rules: the model's labels as they are
    plain = Predictor.load(tiny_model_dir, rules=RuleSet(())).predict([text])[0]
    assert plain.rule_hits == [] and plain.labels == out.model_labels


def test_a_bad_rules_file_is_a_load_error(tiny_model_dir, tmp_path):
    from model.modeling import ModelLoadError

    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {name: r, patterns: {en: ['(']}}\n")
    with pytest.raises(ModelLoadError, match="bad pattern"):
        Predictor.load(tiny_model_dir, rules=bad)
