"""The kernel variants (snnexp/kernels/variants.py): every variant enumerated once."""

from snnexp.kernels.variants import DTYPES, all_variants


def test_every_variant_is_enumerated_once():
    variants = all_variants()
    assert len(variants) == len(set(variants))
    assert sum(v.kind in ("if", "lif", "plif", "ternary", "mlf") for v in variants) == 120 * len(DTYPES)
    assert not any(v.kind == "if" and v.decay_input for v in variants)
    assert sum(v.kind in ("ternary", "mlf") for v in variants) == 20 * len(DTYPES)
    ternary = next(v for v in variants if v.kind == "ternary" and v.detach_reset and v.surrogate == "rectangle")
    assert ternary.name_expressions == ("snn::ternary_forward<float>", "snn::ternary_backward<float, true, 3>")
