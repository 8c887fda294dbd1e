"""`python -m s3core --set FIELD=VALUE` for a field that also has a flag of its own: --set applies
(it raised TypeError: replace() got multiple values, before); a field given both ways is one line."""
import json

from s3core.__main__ import main

TINY = ["d_model=16", "n_heads=2", "d_ff=32", "proj_dim=8", "epoch_probe=False", "diagnostics=False"]


def test_set_takes_a_field_that_has_its_own_flag(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["--quiet", "--method", "clip", "--keep-ratios", "1.0", "--json", str(out),
               "--set", "epochs_special=1", "epochs_select=0", *TINY])
    assert rc == 0
    assert json.loads(out.read_text())["config"]["epochs_special"] == 1 + 0   # clip: epochs_special + epochs_select


def test_a_field_given_by_its_flag_and_by_set_is_one_line(capsys):
    assert main(["--chi", "4", "--set", "chi=4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: chi is set twice") and err.count("\n") == 1
