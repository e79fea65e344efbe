"""Capture the offer the web page sends from headless Chromium, as test data for the fuzzer.

    .venv/bin/python tests/data/capture_chrome_offer.py > tests/data/chrome-offer.sdp

It serves the real page (no models), presses Talk with Chromium's fake microphone, takes the
body of the page's POST /offer off the wire (Playwright route) and prints its SDP unchanged.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web
from playwright.async_api import Route, async_playwright

from agent.config import AppConfig
from signaling.app import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


async def capture() -> str:
    runner = web.AppRunner(create_app(AppConfig()), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    offer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_offer(route: Route) -> None:
        body = route.request.post_data or ""
        if not offer.done():
            offer.set_result(json.loads(body)["sdp"])
        await route.fulfill(status=400, json={"error": "captured"})

    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=ARGS
            )
            try:
                page = await browser.new_page()
                await page.route("**/offer", on_offer)
                await page.goto(url)
                await page.click("#talk")
                async with asyncio.timeout(20):
                    return await offer
            finally:
                await browser.close()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    sys.stdout.write(asyncio.run(capture()))
