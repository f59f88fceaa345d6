import pytest
import yaml

from nfd.config import ConfigError, describe, from_dict, to_dict
from nfd.presets import PRESETS, preset, resolve


def test_paper_presets_hold_the_released_setup():
    """Appendix A's values, and the authors' released configs and main.py where they differ from the text."""
    m, c64, c128, ch = preset("mnist"), preset("celebahq64"), preset("celebahq128"), preset("shapenet_chairs")
    assert (m.generator.encoding.num_frequencies, m.generator.encoding.scale, m.train.batch_size) == (128, 1.0, 128)
    assert m.discriminator.channels == [64, 128, 256]
    assert (c64.generator.encoding.scale, c64.train.batch_size, c64.discriminator.channels) == (
        2.0,
        64,
        [64, 128, 256, 512],
    )
    assert (c128.generator.encoding.scale, c128.train.batch_size) == (3.0, 22)
    assert c128.discriminator.channels == [64, 128, 256, 512, 1024]
    assert c128.train.epochs == 300 and c128.discriminator.layers[0] == "strided:64"  # released (text: 70)
    assert ch.generator.encoding.num_frequencies == 0 and ch.train.batch_size == 26  # released (text: 24)
    assert ch.discriminator.layers == ["conv:32:8", "pool:64", "pool:128", "pool:256"]
    assert (ch.train.lr_g, ch.train.lr_d) == (2e-5, 8e-5)
    for c in (m, c64, c128, ch):
        assert c.generator.hidden == [128, 128, 128] and c.generator.hyper_hidden == [256, 512]
        assert c.generator.latent_dim == 64 and c.discriminator.weight_hidden == [16, 16, 16, 16]
        assert (c.train.beta1, c.train.beta2, c.train.r1_weight) == (0.5, 0.999, 10.0)
        # The released main.py and training.py: LeakyReLU(0.1) in g_phi and f_theta, PyTorch's default init,
        # R1 on the sigmoid output; the discriminator's LeakyReLU stays at 0.2 (their discriminator's default).
        assert (c.generator.leaky_slope, c.generator.init, c.train.r1_on) == (0.1, "pytorch", "sigmoid")
        assert c.discriminator.leaky_slope == 0.2


def test_overrides_yaml_then_set(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text(yaml.safe_dump({"train": {"lr_g": 3e-4, "batch_size": 7}}))
    cfg = resolve(
        "mnist",
        f,
        [
            "batch=9",
            "discriminator.channels=[8,16]",
            "train.r1_on=logit",
            "discriminator.layers=[conv:8:4, pool:16]",
            "generator.init=hyperfan_in",
        ],
    )
    assert cfg.train.lr_g == 3e-4 and cfg.train.batch_size == 9
    assert cfg.discriminator.channels == [8, 16] and cfg.train.r1_on == "logit"
    assert cfg.discriminator.layers == ["conv:8:4", "pool:16"] and cfg.generator.init == "hyperfan_in"
    # The paper text's layout for the chairs is one --set away from the released one.
    assert resolve("shapenet_chairs", None, ["discriminator.layers=[]"]).discriminator.layers == []


@pytest.mark.parametrize(
    "sets, msg",
    [
        (["train.nope=1"], "unknown config key 'train.nope'"),
        (["train.batch_size=abc"], "expects an integer"),
        (["train.r1_on=grad"], "r1_on"),
        (["novalue"], "key=value"),
        (["discriminator.layers=[pool:8, 16]"], "list of strings"),
        (["discriminator.layers=[max:8]"], "discriminator.layers: bad entry 'max:8'"),
        (["generator.init=xavier"], "generator.init"),
        (["train.amp=bf16"], "train.amp must be 'auto', 'on' or 'off'"),
        (["train.amp=1"], "train.amp' expects a string"),
    ],
)
def test_bad_keys_are_named(sets, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve("tiny", None, sets)


def test_amp_takes_its_old_booleans():
    """train.amp was a boolean: configs and checkpoints that say true / false still load, as 'on' / 'off'."""
    assert preset("tiny").train.amp == "auto"
    assert resolve("tiny", None, ["train.amp=true"]).train.amp == "on"
    assert resolve("tiny", None, ["train.amp=false"]).train.amp == "off"
    old = to_dict(preset("tiny"))
    old["train"]["amp"] = False
    assert from_dict(old).train.amp == "off"


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset("nope")


def test_round_trip_every_preset():
    for name in PRESETS:
        cfg = preset(name)
        assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


def test_every_field_documented():
    rows = describe()
    missing = [k for k, _, doc in rows if not doc]
    assert not missing, f"fields without a docstring: {missing}"
    assert any(k == "train.r1_weight" for k, _, _ in rows)
