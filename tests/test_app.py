"""l2s/app.py and `l2s app`: the Gradio app, driven in a real headless browser (Playwright on
Debian's chromium) on the shipped shapes model."""
import shutil
import socket

import numpy as np
import pytest

gradio = pytest.importorskip("gradio", reason="gradio is not installed (pip install l2s[app])")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install l2s[app])")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def shapes():
    pytest.importorskip("l2s_shapes")
    from l2s_shapes.judge import describe_image
    from l2s_shapes.pipeline import load_shipped
    from l2s_shapes.relation_classifier import load_shipped_classifier
    return load_shipped(), load_shipped_classifier(), describe_image


def test_render_gives_both_images_the_verdict_and_the_plots(shapes):
    from l2s.app import render
    pipe, clf, describe = shapes
    r = render(pipe, clf, "a red circle to the left of a blue square", 0, 3, 0.07, 0.2, steps=10, describe=describe)
    assert r["status"].startswith("the steered image starts from the best-scored of 8 noises"), r["status"]
    assert r["vanilla"].shape == r["steered"].shape == (64, 64, 3)
    assert r["verdict"].startswith("evaluator: vanilla ") and abs(sum(r["probabilities"].values()) - 1) < 1e-3
    assert r["maps"].ndim == 3 and r["curves"].ndim == 3


@pytest.mark.parametrize("prompt, says", [
    ("to the left of a cat", "Cannot steer this prompt: no object"),
    ("a red circle and a blue square", "no spatial relation in the prompt"),
    ("a red circle next to a blue square", "unsupported relation"),
    ("", "Type a prompt"),
    ("a red circle to the left of a blue zebra", "the model does not know 'zebra'"),
])
def test_render_explains_prompts_it_cannot_steer(shapes, prompt, says):
    from l2s.app import render
    pipe, clf, describe = shapes
    r = render(pipe, clf, prompt, 0, 3, 0.07, 0.2, steps=4, describe=describe)
    assert says in r["status"], r["status"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_the_page_in_a_headless_browser(shapes, tmp_path):
    from l2s.app import build_app
    pipe, clf, describe = shapes
    app = build_app(pipe, clf, describe, steps=10)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}", wait_until="networkidle")
            page.locator("#prompt textarea").fill("a red circle to the left of a blue square")
            page.locator("#generate").click()
            page.wait_for_selector("#steered img", timeout=180_000)
            page.wait_for_selector("#vanilla img", timeout=60_000)
            verdict = page.locator("#verdict textarea")
            sync_api.expect(verdict).to_have_value(__import__("re").compile("evaluator: vanilla .*steered"),
                                                   timeout=60_000)
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            assert (tmp_path / "app.png").stat().st_size > 10_000
            # a prompt it cannot steer: the reason is in the page, no traceback
            page.locator("#prompt textarea").fill("to the left of a cat")
            page.locator("#generate").click()
            sync_api.expect(page.locator("#status")).to_contain_text("Cannot steer this prompt", timeout=60_000)
            assert "Traceback" not in page.content()
            browser.close()
    finally:
        app.close()
