"""endprompt.bound_tables: the recipes' distance sets against brute force, and the notebook tables' shape and sense."""

import subprocess
import sys

import numpy as np
import pytest

from endprompt import bound as B
from endprompt import bound_tables as BT
from endprompt import positions as P
from endprompt.recipe import RECIPES, Recipe, recipe_position_ids


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_distance_sets_against_brute_force(name):
    a, b, L, samples = 12, 3, 60, 5
    obs, gap = BT.recipe_distance_sets(name, a, b, L, samples=samples, rng=7)
    gen = np.random.default_rng(7)
    brute = set()
    for _ in range(samples):
        ids = recipe_position_ids(Recipe(name=name, a=a, b=b, target_len=L), gen)
        i, j = np.tril_indices(len(ids))
        brute |= set((ids[i] - ids[j]).tolist())
    as_set = lambda iv: {d for lo, hi in iv for d in range(lo, hi + 1)}
    assert as_set(obs) == brute and as_set(gap) == set(range(L)) - brute
    if name in ("endprompt", "endprompt-tail"):
        eq8, eq9 = P.endprompt_distance_sets(a, b, L)
        np.testing.assert_array_equal(obs, eq8)
        np.testing.assert_array_equal(gap, eq9)


def test_tables():
    bw = BT.bandwidth_table(rope_types=("none", "linear", "yarn"), scales=(2, 4), head_dim=32, original_len=1024)
    linear = bw[bw["rope_type"] == "linear"].set_index("s")["sigma"]
    assert linear[2] == pytest.approx(0.5) and linear[4] == pytest.approx(0.25)  # PI: theta_0 / s
    np.testing.assert_allclose(bw[bw["rope_type"] != "linear"]["sigma"], 1.0)  # they keep theta_0 = 1
    study = BT.bernstein_study({"random": B.random_coefficients(20, 32, 0)}, rope_types=("linear",), scales=(2,),
                               head_dim=32, original_len=1024, num_points=256)
    assert len(study) == 20 and (study[["ratio_1", "ratio_2"]] <= 1).all().all()
    cov = BT.coverage_table(a=64, b=4, target_len=512, samples=4)
    share = cov.groupby("recipe", sort=False)["share_observed"].first()
    assert share["full"] == 1.0 and share["short"] == pytest.approx(68 / 512)
    assert share["short"] < share["endprompt"] < share["full"]
    ident = BT.identifiability_table(recipes=("short", "endprompt", "full"), head_dims=(16,), a=64, b=4,
                                     target_len=512, original_len=64, samples=2)
    assert len(ident) == 3 * 2 and ident["unexplained_gap"].between(0, 1).all()


def test_bound_needs_neither_pandas_nor_torch():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('pandas', 'torch'):\n"
            "            raise ImportError(f'blocked {name}')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import endprompt.bound as B\n"
            "print(B.bandwidth.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
