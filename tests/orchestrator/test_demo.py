from orchestrator.cli import main


def test_demo_trains_forgets_and_verifies(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "SISA: 5 shards x 4 slices",
        "monolithic model",
        "forget [",
        "journaled",
        "VERIFIED",
    ):
        assert needle in out
    assert "5/5 shards bitwise identical" in out
    assert "receipt chain of 1 intact" in out and "no deleted point anywhere" in out
