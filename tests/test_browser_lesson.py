"""The lesson and the class's first clicks in a real browser (Playwright driving Debian's
Chromium) against a real server on 127.0.0.1: an example click shows results, a lesson step
sets its controls. Uses the server and page helpers of test_browser.py.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

from ivfusion import lab  # noqa: E402
from tests.test_browser import OUT, _loaded, lab_page, server  # noqa: E402,F401 - the module's server fixture

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.server]


def test_an_example_click_shows_that_examples_results(server, chromium_path):
    from playwright.sync_api import expect

    url, demo = server
    assert demo.lab_app.precomputed.wait(600)  # the examples' results are in the shared cache
    with lab_page(url, chromium_path, 1400, 1000) as page:
        before = _loaded(page, "#fused-intervened").get_attribute("src")
        labels = [label for _, _, label in lab.example_pairs()]
        k = next(i for i, (v, _, _) in enumerate(lab.example_pairs()) if "msrs_00002D" in v)
        page.locator("#examples .thumbnail-item").nth(k).click()
        page.wait_for_function("s => { const i = document.querySelector('#fused-intervened img');"
                               " return i && i.src && i.src !== s && i.complete && i.naturalWidth > 0; }",
                               arg=before, timeout=60_000)
        expect(page.locator("#notices")).to_contain_text("shown from the cache", timeout=30_000)
        assert labels[k].startswith("Day") and "computed in" not in page.locator("#notices").inner_text()
        page.screenshot(path=str(OUT / "app-example-click-1400.png"))


def test_a_lesson_step_sets_its_controls(server, chromium_path):
    from playwright.sync_api import expect

    url, _ = server
    with lab_page(url, chromium_path, 1400, 1000) as page:
        page.get_by_label("Lesson: pick a step").click()
        page.get_by_role("option", name=lab.lesson.CHOICES[2]).click()  # "3. Let the holes overlap"
        expect(page.locator("#lesson-card")).to_contain_text("Step 3 of", timeout=30_000)
        expect(page.get_by_label("Random masking")).to_be_checked(timeout=30_000)
        expect(page.get_by_label("Complementary masking")).not_to_be_checked()
        expect(page.locator("#seed input")).to_have_value("1")
        page.get_by_label("Lesson: pick a step").click()
        page.get_by_role("option", name=lab.lesson.CHOICES[3]).click()  # "4. Drop the infrared image"
        expect(page.locator("#lesson-card")).to_contain_text("Step 4 of", timeout=30_000)
        expect(page.get_by_label("Random masking")).not_to_be_checked(timeout=30_000)
        expect(page.get_by_label("drop infrared")).to_be_checked()
        page.screenshot(path=str(OUT / "app-lesson-step-1400.png"))


def test_compare_rows_carry_model_names(server, chromium_path):
    from playwright.sync_api import expect

    url, _ = server
    with lab_page(url, chromium_path, 1400, 1000) as page:
        page.locator("#compare-section").get_by_text("Compare two models").click()
        page.locator("#compare-btn").click()  # the untrained network by default: offline
        expect(page.locator("#compare-text")).to_contain_text("shared by the three levels and both models",
                                                             timeout=180_000)
        for level in ("coarse", "mid", "fine"):
            expect(page.locator(f"#compare-{level}")).to_contain_text("Bundled (top) | Untrained (bottom)")
        expect(page.locator("#compare-fused")).to_contain_text("Bundled (left) | Untrained (right)")
        # the compare menu follows the main model: with the untrained network as the main one, the
        # bundled weights can be chosen to compare against
        page.get_by_label("Model", exact=True).click()
        page.get_by_role("option", name=lab.UNTRAINED_CHOICE).click()
        page.get_by_label("Compare with").click()
        expect(page.get_by_role("option", name=lab.DEFAULT_CHOICE)).to_be_visible(timeout=30_000)
        expect(page.get_by_role("option", name=lab.UNTRAINED_CHOICE)).to_have_count(0)
        page.screenshot(path=str(OUT / "app-compare-names-1400.png"), full_page=True)


def test_a_negative_seed_is_refused_and_the_results_stay(server, chromium_path):
    from playwright.sync_api import expect

    url, _ = server
    with lab_page(url, chromium_path, 1400, 1000) as page:
        before = _loaded(page, "#fused-intervened").get_attribute("src")
        page.locator("#seed input").fill("-1")
        page.locator("#fuse-btn").click()
        toast = page.locator(".toast-body").filter(has_text="seed must be a whole number").first
        expect(toast).to_be_visible(timeout=60_000)
        assert page.locator("#fused-intervened img").get_attribute("src") == before  # not wiped
        assert page.locator("#gates img").count() == 1


def test_on_a_phone_fuse_brings_the_results_into_view(server, chromium_path):
    url, _ = server
    with lab_page(url, chromium_path, 390, 844) as page:
        _loaded(page, "#fused-clean")
        page.locator("#fuse-btn").scroll_into_view_if_needed()
        assert page.evaluate("document.querySelector('#results').getBoundingClientRect().top") < 0  # above
        page.locator("#fuse-btn").click()
        # the results sit above the controls on a phone: Fuse scrolls up to them
        page.wait_for_function("() => { const r = document.querySelector('#results').getBoundingClientRect();"
                               " return r.top > -2 && r.top < window.innerHeight / 2; }", timeout=30_000)
        page.screenshot(path=str(OUT / "app-phone-after-fuse-390.png"))
