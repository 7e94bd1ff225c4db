"""What the Lab shares between visitors (ivfusion/lab/cache.py): results and clean passes,
keyed on the model, the pair's content and every setting, with session isolation.

The callbacks run the real network at a reduced size (128 px a side); one test drives a real
server through two gradio_client visitors.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import shutil  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import app  # noqa: E402
from ivfusion import io, lab, read_image  # noqa: E402
from ivfusion.lab import cache  # noqa: E402

pytestmark = [pytest.mark.slow]  # the real network

EX = lab.EXAMPLES_DIR
VIS, IR = str(EX / "vi" / "msrs_00009N.png"), str(EX / "ir" / "msrs_00009N.png")


@pytest.fixture(scope="module")
def lab_app():
    cache.PAIRS.clear()
    cache.RESULTS.clear()
    return app.LabApp(lab.ModelBank(env={}, device="cpu", max_side=128), precompute=False)


def _fuse(lab_app, state, vis=VIS, ir=IR, **kw):
    out = lab_app.fuse(vis, ir, lab.DEFAULT_CHOICE, **kw, state=state)
    return out, dict(state["timings"])


def test_a_second_visitor_with_the_same_request_gets_the_cached_result(lab_app):
    a, b = {}, {}
    out_a, t_a = _fuse(lab_app, a, seed=3)
    out_b, t_b = _fuse(lab_app, b, seed=3)
    assert t_a["cached"] == 0 and t_b["cached"] == 1 and "run" not in t_b  # no forward pass for b
    assert "shown from the cache" in out_b["notices"] and "shown from the cache" not in out_a["notices"]
    for name in ("fused_clean", "fused_intervened", "gates", "inputs", "difference"):
        assert out_a[name] != out_b[name]  # each request gets its own files...
        np.testing.assert_array_equal(read_image(out_a[name]), read_image(out_b[name]))  # ...of the same result
    assert b["run"] is a["run"]  # held once
    assert lab_app.metrics(b) == lab_app.metrics(a)


@pytest.mark.parametrize("change", [dict(seed=4), dict(holes=2), dict(hole_percent=12.5), dict(random_masking=True),
                                    dict(dropout="drop visible"), dict(gate_scale="stretched per level")])
def test_every_setting_is_part_of_the_key(lab_app, change):
    _fuse(lab_app, {}, seed=3)
    out, t = _fuse(lab_app, {}, **({"seed": 3} | change))
    assert t["cached"] == 0, change


def test_the_pair_is_keyed_on_its_content_not_its_file_name(lab_app, tmp_path):
    lab.uploads.trust_folder(tmp_path)
    same_v, same_i = tmp_path / "copy_v.png", tmp_path / "copy_i.png"
    shutil.copy(VIS, same_v)
    shutil.copy(IR, same_i)
    _fuse(lab_app, {}, seed=9)
    _, t = _fuse(lab_app, {}, str(same_v), str(same_i), seed=9)
    assert t["cached"] == 1  # another upload of the same files
    edited = io.read_image(IR).copy()
    edited[0, 0] ^= 1  # one pixel of the infrared image
    io.write_png(tmp_path / "edited_i.png", edited)
    _, t = _fuse(lab_app, {}, str(same_v), str(tmp_path / "edited_i.png"), seed=9)
    assert t["cached"] == 0


def test_a_second_visitor_on_the_same_pair_pays_only_for_the_intervened_pass(lab_app):
    first = {}
    _fuse(lab_app, first, seed=21)
    second = {}
    _, t = _fuse(lab_app, second, seed=22)  # another result: computed
    assert t["cached"] == 0
    assert second["run"].clean is first["run"].clean  # the clean pass was not run again
    pair = lab_app._pair(VIS, IR, lab.DEFAULT_CHOICE)
    assert pair.clean is first["run"].clean and pair.fuser._feats  # its clean features are kept for the next one


def test_a_drawn_mask_is_never_cached_and_never_served_to_another_visitor(lab_app, tmp_path):
    lab.uploads.trust_folder(tmp_path)
    h, w = read_image(VIS).shape[:2]
    layer = np.zeros((h, w, 4), np.uint8)
    layer[: h // 2, :, 3] = 255  # the top half painted
    cv2.imwrite(str(tmp_path / "layer.png"), layer)
    drawn = {"background": VIS, "layers": [str(tmp_path / "layer.png")], "composite": None}
    painter = {}
    out_p, t_p = _fuse(lab_app, painter, seed=31, draw_visible=drawn)
    other = {}
    out_o, t_o = _fuse(lab_app, other, seed=31)
    assert t_p["cached"] == 0 and t_o["cached"] == 0  # the painter's result was not stored for others
    assert "drawn mask" in out_p["notices"] and "drawn mask" not in out_o["notices"]
    assert not np.array_equal(read_image(out_p["inputs"]), read_image(out_o["inputs"]))
    _, t_again = _fuse(lab_app, {}, seed=31, draw_visible=drawn)
    assert t_again["cached"] == 0


def test_a_visitors_state_holds_only_their_own_last_result(lab_app):
    a, b = {}, {}
    _fuse(lab_app, a, seed=41)
    _fuse(lab_app, b, seed=42)
    _fuse(lab_app, a, seed=41)  # a cache hit for a
    assert a["run"].settings.seed == 41 and b["run"].settings.seed == 42
    table_a, table_b = lab_app.metrics(a), lab_app.metrics(b)
    assert table_a != table_b
    assert not any(hasattr(cache.RESULTS, n) for n in ("keys", "items", "values", "__iter__"))  # nothing lists entries


def test_the_caches_are_bounded_least_recently_used_first():
    c = cache.LRUCache(3 * 1000, lambda v: v.nbytes)
    for k in "abc":
        c.put(k, np.zeros(1000, np.uint8))
    assert c.get("a") is not None  # "a" is now the most recently used
    c.put("d", np.zeros(1000, np.uint8))
    assert c.get("b") is None and c.get("a") is not None and c.get("c") is not None and c.get("d") is not None
    assert c.bytes == 3000 and c.evictions == 1
    c.put("huge", np.zeros(5000, np.uint8))  # larger than the whole bound: not kept, nothing evicted
    assert c.get("huge") is None and len(c) == 3
    cache.configure({"IVFUSION_RESULT_CACHE_MB": "1", "IVFUSION_PAIR_CACHE_MB": "2"})
    try:
        assert cache.RESULTS.max_bytes == 2**20 and cache.PAIRS.max_bytes == 2 * 2**20
        with pytest.raises(ValueError, match="IVFUSION_RESULT_CACHE_MB"):
            cache.configure({"IVFUSION_RESULT_CACHE_MB": "lots"})
    finally:
        cache.configure({})


@pytest.mark.server
def test_two_clients_through_a_real_server_share_results_not_sessions(tmp_path):
    from gradio_client import Client, handle_file

    from tests.appserver import AppServer

    names = app.API_FUSE_OUTPUTS
    with AppServer(env={"IVFUSION_MAX_SIDE": "128", "HF_HUB_OFFLINE": "1"}, log_dir=tmp_path) as server:
        a, b = Client(server.url, verbose=False), Client(server.url, verbose=False)
        kw = dict(visible=handle_file(VIS), infrared=handle_file(IR), seed=5, api_name="/fuse")
        out_a = dict(zip(names, a.predict(**kw)))
        out_b = dict(zip(names, b.predict(**kw)))
        assert "computed in" in out_a["notices"] and "shown from the cache" in out_b["notices"]
        np.testing.assert_array_equal(read_image(out_a["fused_intervened"]), read_image(out_b["fused_intervened"]))
        out_c = dict(zip(names, b.predict(**(kw | {"seed": 6}))))  # b's own seed: computed
        assert "computed in" in out_c["notices"]
        # each client's /metrics is of its own last request
        assert a.predict(api_name="/metrics") != b.predict(api_name="/metrics")
