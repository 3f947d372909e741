"""The README's picture of the web page: serve runs, open the page in Debian's chromium
(the browser tests' setup: Playwright, headless, --no-sandbox), ask one question, open
one answer token's distribution and write a PNG.

    python docs/screenshot.py runs/quickstart/chat runs/quickstart/run --out docs/web.png
"""

from __future__ import annotations

import argparse
import threading
import time

import uvicorn
from playwright.sync_api import sync_playwright

from lanternlm.serve import ServeConfig
from lanternlm.serve.app import create_app, load_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories to serve; the first is the one shown")
    parser.add_argument("--question", default="How many r's are in strawberry?")
    parser.add_argument("--level", default="high", help="reasoning level")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--preset", default="chatbot", help="sampling preset ('' = the page's defaults)")
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--budget", type=int, default=32, help="thinking budget")
    parser.add_argument("--token", type=int, default=4, help="the answer token whose popover is open")
    parser.add_argument("--tab", default="attention", help="the panel shown: tokens, attention, next, embeddings, model")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--scheme", default="light", help="light or dark")
    parser.add_argument("--out", default="docs/web.png")
    args = parser.parse_args()

    models = load_models(args.runs, ServeConfig(max_batch=2))
    server = uvicorn.Server(uvicorn.Config(create_app(models), host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    url = "http://127.0.0.1:%d/" % server.servers[0].sockets[0].getsockname()[1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height}, color_scheme=args.scheme)
        page.goto(url)
        page.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
        page.select_option("#model", models[0].name)
        if models[0].chat:
            page.select_option("#level", args.level)
            page.fill("#budget", str(args.budget))
            page.dispatch_event("#budget", "change")
        if args.preset:
            page.select_option("#preset", args.preset)
        for selector, value in (("#seed", args.seed), ("#max_tokens", args.max_tokens)):
            page.fill(selector, str(value))
            page.dispatch_event(selector, "change")
        page.fill("#input", args.question)
        page.press("#input", "Enter")
        page.wait_for_function("() => document.querySelector('#stop').hidden && !document.querySelector('.cursor')")
        page.click(f".tabs [data-tab='{args.tab}']")
        page.locator(".msg.assistant .tok").nth(args.token).click()
        page.wait_for_selector("#popover:not([hidden]) tr[data-id]")
        if args.tab == "attention":  # hover the heatmap's last row: what the newest token reads
            page.wait_for_selector("#panel-attention canvas.heat")
            box = page.locator("#panel-attention canvas.heat").bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 2)
        page.wait_for_timeout(500)
        page.screenshot(path=args.out)
        browser.close()
    server.should_exit = True
    for m in models:
        m.worker.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
