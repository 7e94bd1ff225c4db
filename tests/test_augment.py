"""Issue 24's training data: the per-batch night quota, the exposure changes, zoomed crops and
flat-crop rejection (ivfusion/train/augment.py), and the control's single forward pass."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ivfusion.modeling import ISFuse
from ivfusion.train import TrainConfig
from ivfusion.train import augment
from ivfusion.train.augment import AugmentConfig
from ivfusion.train.config import ConfigError
from ivfusion.train.dataset import PairDataset, QuotaBatchSampler
from ivfusion.train.step import FiveWay, train_step
from tests.helpers import SHARED

MSRS = str(SHARED / "data" / "msrs" / "train")
ROAD = str(SHARED / "data" / "roadscene" / "train")


@pytest.fixture(scope="module")
def both_domains():
    return PairDataset([ROAD, MSRS], 128, seed=0)


def test_night_means_a_visible_mean_below_the_bound_computed_independently(both_domains):
    # the expectation from OpenCV's own BT.601 grey of each visible file, not from load_pair
    bound = AugmentConfig().night_below
    expected = {}
    for folder in (ROAD, MSRS):
        for f in sorted((SHARED / "data" / folder.split("data/")[1] / "vi").iterdir()):
            mean = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).mean() / 255
            assert abs(mean - bound) > 0.005, f"{f.name} sits on the bound; the test would be fragile"
            expected[f"{'roadscene' if folder == ROAD else 'msrs'}/{f.stem}"] = mean < bound
    names = [f"{'msrs' if i >= len(both_domains) - 30 else 'roadscene'}/{name.split('/')[1]}"
             for i, (_, name) in enumerate(both_domains.items)]
    assert [expected[n] for n in names] == both_domains.night
    assert not any(v for k, v in expected.items() if k.startswith("roadscene"))  # all daylight
    assert sum(both_domains.night) >= 20  # most MSRS scenes are night ones


@pytest.mark.parametrize("share, batch", [(0.5, 16), (0.25, 16), (0.5, 6)])
def test_the_quota_holds_in_every_batch_and_is_a_function_of_seed_and_step(both_domains, share, batch):
    night = both_domains.night
    full = QuotaBatchSampler(night, batch, 0, 1, seed=3, start=0, steps=40, share=share)
    batches = [[i for _, i in b] for b in full]
    for b in batches:
        assert sum(night[i] for i in b) == round(share * batch)
        assert len(b) == batch
    # a sampler started at step 25 (a resumed run) yields the same batches from there on
    later = [[i for _, i in b] for b in QuotaBatchSampler(night, batch, 0, 1, 3, 25, 40, share)]
    assert later == batches[25:]
    # two processes split each batch between them: together, exactly the single process's batch
    halves = [list(QuotaBatchSampler(night, batch, r, 2, 3, 0, 40, share)) for r in (0, 1)]
    for step, (a, b) in enumerate(zip(*halves)):
        assert sorted(i for _, i in a + b) == sorted(batches[step])
        assert {s for s, _ in a + b} == {step}
    # another seed draws other batches
    other = [[i for _, i in b] for b in QuotaBatchSampler(night, batch, 0, 1, 4, 0, 40, share)]
    assert other != batches


def test_every_night_pair_is_drawn_as_often_as_any_other(both_domains):
    night = both_domains.night
    n = sum(night)
    sampler = QuotaBatchSampler(night, 16, 0, 1, 0, 0, n, 0.5)  # n steps of 8 night crops: 8 passes
    counts = np.bincount([i for b in sampler for _, i in b], minlength=len(night))
    assert set(counts[np.asarray(night)]) == {8}


def test_a_quota_without_pairs_of_a_domain_is_a_one_line_error():
    day_only = PairDataset([ROAD], 128, seed=0)
    with pytest.raises(ConfigError, match="no night pair"):
        QuotaBatchSampler(day_only.night, 16, 0, 1, 0, 0, 10, 0.5)


def _flat_pair(tmp_path, ir_value: int, vis_value: int, size=(160, 200)):
    for sub, v in (("ir", ir_value), ("vi", vis_value)):
        (tmp_path / sub).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / sub / "p.png"), np.full(size + (3,), v, np.uint8))
    return str(tmp_path)


@pytest.mark.parametrize("vis_value, night", [(200, False), (30, True)])
def test_exposure_changes_stay_within_their_documented_bounds(tmp_path, vis_value, night):
    ir_value = 120
    cfg = AugmentConfig(photometric=1.0, darken=0.5)
    data = PairDataset([_flat_pair(tmp_path, ir_value, vis_value)], 64, seed=0, augment=cfg)
    assert data.night == [night]
    v, r = vis_value / 255, ir_value / 255
    # bounds written from the constants: y -> gain * y ** gamma (+ noise) over the ranges' corners
    PG, PGA = augment.PHOTO_GAIN, augment.PHOTO_GAMMA
    photo_vis = (PG[0] * v ** PGA[1], min(1.0, PG[1] * v ** PGA[0]))
    photo_ir = (PG[0] * r ** PGA[1], min(1.0, PG[1] * r ** PGA[0]))
    dark_vis = (augment.DARK_VIS_GAIN[0] * v ** augment.DARK_VIS_GAMMA[1],
                augment.DARK_VIS_GAIN[1] * v ** augment.DARK_VIS_GAMMA[0])
    dark_ir = (augment.DARK_IR_GAIN[0] * r, augment.DARK_IR_GAIN[1] * r)
    noise = 5 * augment.DARK_NOISE_SIGMA[1] / np.sqrt(64 * 64)  # bound on the noise's mean over a crop
    darkened = 0
    for step in range(60):
        img = data.image_at(step, 0)
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
        ir_mean, vis_mean = float(img[1].mean()), float(img[0].mean())
        assert float(img[1].std()) < 1e-6  # the infrared is rescaled, never noised
        if float(img[0].std()) > 1e-4:  # sensor noise: only darkening adds it (sigma >= 0.002)
            darkened += 1
            assert dark_vis[0] - noise <= vis_mean <= dark_vis[1] + noise
            assert dark_ir[0] - 1e-6 <= ir_mean <= dark_ir[1] + 1e-6
        else:
            assert photo_vis[0] - 1e-6 <= vis_mean <= photo_vis[1] + 1e-6
            assert photo_ir[0] - 1e-6 <= ir_mean <= photo_ir[1] + 1e-6
    if night:
        assert darkened == 0, "a night pair was darkened"
    else:
        assert 15 <= darkened <= 45  # p = 0.5 over 60 draws: outside is a 1-in-10,000 event
    # a function of the sample's key alone
    assert np.array_equal(data.image_at(7, 0), data.image_at(7, 0))


def test_zoomed_crops_keep_the_pair_aligned_and_their_region_within_bounds(tmp_path):
    # a pair whose infrared is the visible image itself (grey, so visible Y == infrared):
    # any misalignment of the two crops shows as a difference
    vi = cv2.imread(str(SHARED / "data" / "msrs" / "train" / "vi" / "00003N.png"), cv2.IMREAD_GRAYSCALE)
    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "p.png"), cv2.merge([vi, vi, vi]))
    data = PairDataset([str(tmp_path)], 64, seed=0, augment=AugmentConfig(zoom=4.0))
    for step in range(20):
        img = data.crop_at(step, 0)
        assert img.shape == (2, 64, 64)
        assert np.abs(img[0] - img[1]).max() < 1e-6
    rng = np.random.default_rng(0)
    sides = [augment.region_side(rng, 64, 480, 640, 4.0) for _ in range(500)]
    assert min(sides) >= 64 and max(sides) <= 256 and max(sides) > 200 and min(sides) < 80
    assert augment.region_side(rng, 64, 70, 640, 4.0) <= 70  # never larger than the image


def test_flat_crops_are_drawn_again(tmp_path):
    # an image whose left 40% is black in both modalities: plain crops often land there
    vi = cv2.imread(str(SHARED / "data" / "msrs" / "train" / "vi" / "00003N.png"))
    ir = cv2.imread(str(SHARED / "data" / "msrs" / "train" / "ir" / "00003N.png"))
    for sub, img in (("ir", ir), ("vi", vi)):
        img = img.copy()
        img[:, : int(0.4 * img.shape[1])] = 0
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "p.png"), img)

    def flat_count(flat_below):
        data = PairDataset([str(tmp_path)], 128, seed=0, augment=AugmentConfig(flat_below=flat_below))
        return sum(augment.is_flat(data.crop_at(s, 0), 0.01) for s in range(100))

    assert flat_count(0.0) > 5  # the test can fail: without rejection, flat crops occur
    assert flat_count(0.01) == 0


@pytest.mark.parametrize("bad", [{"night_share": 1.5}, {"darken": -0.1}, {"zoom": 0.5}, {"flat_below": 0.7},
                                 {"night_below": 0.0}])
def test_out_of_range_augment_settings_are_refused(bad):
    with pytest.raises(ValueError, match="--augment"):
        AugmentConfig(**bad)


@pytest.mark.slow  # training steps, 3-10 CPU-seconds each
@pytest.mark.parametrize("interventions, passes, forwards", [(True, "separate", 5), (True, "pooled", 5),
                                                             (False, "separate", 1)])
def test_the_control_runs_one_forward_per_sample_and_isfuse_five(interventions, passes, forwards):
    cfg = TrainConfig(data=[MSRS], val=None, crop=32, batch_size=3, interventions=interventions, passes=passes)
    torch.manual_seed(0)
    model = ISFuse(cfg.model).train()
    samples = []
    hook = model.register_forward_hook(lambda mod, args, out: samples.append(args[0].shape[0]))
    data = PairDataset([MSRS], 32, seed=0)
    batch = torch.utils.data.default_collate([data[(0, i)] for i in range(3)])
    terms = train_step(FiveWay(model, passes), torch.optim.Adam(model.parameters()), batch, cfg, torch.device("cpu"))
    hook.remove()
    assert sum(samples) == forwards * 3
    assert set(terms) == ({"loss", "L_f", "L_inv", "L_nec"} if interventions else {"loss", "L_f"})
    if not interventions:
        assert terms["loss"] == terms["L_f"]
