from __future__ import annotations

import json

from typer.testing import CliRunner

from carelens.cli import app

runner = CliRunner()


def test_every_command_has_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = [
        line.split()[1]
        for line in result.output.splitlines()
        if line.startswith("│ ") and len(line.split()) > 2
    ]
    assert "predict" in commands
    for args in (["predict"], ["model"], ["model", "init"], ["model", "info"]):
        r = runner.invoke(app, [*args, "--help"])
        assert r.exit_code == 0, (args, r.output)
        assert "Usage" in r.output


def test_predict_prints_one_json_per_text(tiny_model_dir):
    r = runner.invoke(
        app, ["predict", "--model", str(tiny_model_dir), "my order never arrived", "质量差"]
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["text"] for x in lines] == ["my order never arrived", "质量差"]
    assert set(lines[0]["tasks"]) == {"issue_type", "sentiment", "urgency"}
    assert lines[0]["tasks"]["sentiment"]["evidence"][0]["text"] == "my order never arrived"


def test_predict_from_jsonl_and_text_files(tiny_model_dir, tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "box was broken"}\n\n{"text": "退款"}\n', encoding="utf-8")
    r = runner.invoke(
        app, ["predict", "-m", str(tiny_model_dir), "--input", str(jsonl), "--no-evidence"]
    )
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 2
    txt = tmp_path / "in.txt"
    txt.write_text("one\r\ntwo\n", encoding="utf-8")
    r = runner.invoke(app, ["predict", "-m", str(tiny_model_dir), "-i", str(txt)])
    assert [json.loads(x)["text"] for x in r.stdout.splitlines()] == ["one", "two"]


def test_predict_rejects_invalid_utf8_naming_the_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbroken \xff\xfe bytes\n")
    r = runner.invoke(app, ["predict", "-m", str(tiny_model_dir), "-i", str(bad)])
    assert r.exit_code == 2
    assert "bad.txt:2: invalid UTF-8" in r.output
    assert r.stdout.strip() == "" or "{" not in r.stdout  # nothing printed half


def test_predict_errors(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["predict", "-m", str(tiny_model_dir), "ok", "  "])
    assert r.exit_code == 2 and "texts[1] is empty" in r.output
    r = runner.invoke(app, ["predict", "-m", str(tmp_path / "missing"), "hello"])
    assert r.exit_code == 2 and "model directory not found" in r.output
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"txt": "no text field"}\n', encoding="utf-8")
    r = runner.invoke(app, ["predict", "-m", str(tiny_model_dir), "-i", str(bad)])
    assert (
        r.exit_code == 2 and "x.jsonl:1: expected an object with a string field 'text'" in r.output
    )


def test_model_info(tiny_model_dir):
    r = runner.invoke(app, ["model", "info", str(tiny_model_dir)])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["tasks"]["urgency"]["kind"] == "ordinal" and info["trained"] is False
