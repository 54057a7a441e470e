"""The widgets in a real browser: JupyterLab started here on the test's sandbox, a notebook that
shows each widget, driven by Playwright in Debian's headless Chromium. Each widget renders
with market data, a chat answer streams into the page, the Sessions widget follows the chat's
session as it opens and ends, Compare fills a card per provider, and a Close button closes a
session on chain."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.sandbox.market import MODELS, PROVIDERS

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make chromium)"
)

if CHROMIUM is not None:
    from playwright.sync_api import Page, expect, sync_playwright

    expect.set_options(timeout=60_000)  # a kernel, a chain and providers are behind each check

MODEL = "llama-3.3-70b"
TOKEN = "mor-widgets-test"
NOTEBOOK = "widgets.ipynb"
CELLS = [
    """\
import mor_workbench as mor
from pathlib import Path
from mor_workbench.widgets import Chat, Compare, Explorer, Sessions

wb = mor.connect("sandbox", sandbox_dir={sandbox_dir!r})
budget = wb.bids("{model}").sort_values("price_per_hour").iloc[0]["id"]  # 50 tok/s: visibly streams
""",
    "Explorer(wb)",
    'Chat(wb, model="{model}", bid=budget)',
    """\
mine = wb.open_session("{model}", duration="6m")
Path("session_id.txt").write_text(mine.id)
Sessions(wb)
""",
    'Compare(wb, "Say hi", model="{model}", max_tokens=12)',
]
# Once the notebook's kernel is up, run every cell (without waiting for them to finish).
RUN_ALL = """async () => {
  const notebook = window.jupyterapp.shell.currentWidget;
  const late = new Promise((_, fail) =>
    setTimeout(() => fail(new Error("no kernel in 60 s")), 60000));
  await Promise.race([notebook.sessionContext.ready, late]);
  window.jupyterapp.commands.execute("notebook:run-all-cells");
}"""
# Records every text the chat's last answer shows, to prove it arrived in pieces.
WATCH_ANSWER = """() => {
  window.morSeen = [];
  const log = document.querySelector('[data-testid="chat-log"]');
  new MutationObserver(() => {
    const answers = log.querySelectorAll('[data-testid="chat-assistant"]');
    const last = answers[answers.length - 1];
    if (last && last.textContent !== "…") window.morSeen.push(last.textContent);
  }).observe(log, { childList: true, subtree: true, characterData: true });
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"JupyterLab did not answer in 60 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sandbox of this module's own: the Sessions widget shows every open session of the
    account, so no other test's session may be open there."""
    directory = tmp_path_factory.mktemp("browser-sandbox")
    sandbox.start(directory)
    yield directory
    sandbox.reset(directory)


@pytest.fixture(scope="module")
def lab(sandbox_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """JupyterLab on a free port, rooted in a folder holding the widgets notebook; its kernels
    keep their journals in a home of their own. Yields the notebook's URL and the folder."""
    root = tmp_path_factory.mktemp("lab")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(c.format(sandbox_dir=str(sandbox_dir), model=MODEL))
        for c in CELLS
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, root / NOTEBOOK)
    state = tmp_path_factory.mktemp("jupyter")
    env = {
        **os.environ,
        "MOR_WORKBENCH_HOME": str(state / "home"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_DATA_DIR": str(state / "data"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
    }
    notices = state / "settings" / "@jupyterlab" / "apputils-extension"
    notices.mkdir(parents=True)  # no news or update toasts over the widgets
    (notices / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    port = free_port()
    log = state / "lab.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",  # containers and CI run as root
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--ServerApp.root_dir={root}",
                f"--IdentityProvider.token={TOKEN}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.extension_manager=readonly",  # no index look-ups
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/status?token={TOKEN}", server, log)
        yield f"{base}/lab/tree/{NOTEBOOK}?token={TOKEN}", root
    finally:
        server.send_signal(signal.SIGTERM)  # shuts its kernels down; they close their sessions
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def page(lab: tuple[str, Path]) -> Iterator[Page]:
    """The notebook open in headless Chromium, every cell run."""
    url, _ = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(60_000)
        tab.goto(url)
        tab.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext")
        tab.evaluate(RUN_ALL)
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def wb(sandbox_dir: Path) -> Iterator[mor.Workbench]:
    """The test's own view of the chain, to check what the page did."""
    workbench = mor.connect("sandbox", sandbox_dir=sandbox_dir)
    yield workbench
    workbench.close()


def test_explorer_renders_the_market_and_the_scatter(page: Page) -> None:
    explorer = page.locator(".mor-explorer")
    named = re.compile(rf"{re.escape(MODEL)}(?!:)")  # llama-3.3-70b, not llama-3.3-70b:web
    expect(explorer.locator("tbody tr", has_text=named)).to_have_count(1)
    expect(explorer.locator("tbody tr")).to_have_count(len(MODELS))
    explorer.locator("th", has_text="model").click()  # sort by name, the other way
    last_name = max(m.name for m in MODELS)
    expect(explorer.locator("tbody tr").first).to_contain_text(last_name)
    points = page.locator(".js-plotly-plot .scatterlayer .point")
    expect(points).to_have_count(len(MODELS) * len(PROVIDERS))


def test_chat_round_trip_streams_into_the_page(page: Page) -> None:
    chat = page.locator(".mor-chat")
    expect(chat.locator('[data-testid="chat-provider"] option')).to_have_count(4)
    page.evaluate(WATCH_ANSWER)
    chat.locator('[data-testid="chat-input"]').fill("Hello from the browser")
    chat.locator('[data-testid="chat-send"]').click()
    expect(chat.locator('[data-testid="chat-user"]')).to_have_text("Hello from the browser")
    footer = chat.locator('[data-testid="chat-footer"]')
    expect(footer).to_contain_text("tokens/s")
    expect(footer).to_contain_text("MOR")
    answer = chat.locator('[data-testid="chat-assistant"]').inner_text()
    seen = page.evaluate("() => window.morSeen")
    partial = [text for text in seen if text and text != answer]
    assert len(set(partial)) >= 2, seen  # it arrived in pieces
    assert all(answer.startswith(text) for text in partial)
    expect(chat.locator('[data-testid="chat-session"]')).to_contain_text("left")


def test_sessions_shows_the_session_the_chat_opened(page: Page) -> None:
    """The Sessions widget was drawn before the chat's first prompt opened its session: it
    reloads on that open (no Refresh click) and counts the chat's stake."""
    chat_session = page.locator('.mor-chat [data-testid="chat-session"]')
    expect(chat_session).to_contain_text("left")
    session_id = chat_session.get_attribute("title").splitlines()[0]
    sessions = page.locator(".mor-sessions")
    expect(sessions.locator(f'tr[data-session-id="{session_id}"]')).to_have_count(1)
    staked = sessions.locator('[data-testid="balances"] .mor-balance', has_text="staked")
    expect(staked).not_to_have_text("staked 0 MOR")


def test_compare_fills_a_card_per_provider(page: Page) -> None:
    cards = page.locator(".mor-compare .mor-card")
    expect(cards).to_have_count(3)
    expect(page.locator('.mor-compare .mor-card[data-state="done"]')).to_have_count(3)
    for index in range(3):
        card = cards.nth(index)
        expect(card.locator('[data-testid="compare-answer"]')).not_to_have_text("…")
        expect(card.locator('[data-metric="ttft_s"]')).to_contain_text(" s")


def test_close_button_closes_the_session_on_chain(
    page: Page, lab: tuple[str, Path], wb: mor.Workbench
) -> None:
    _, root = lab
    sessions = page.locator(".mor-sessions")
    expect(sessions).to_be_visible()
    deadline = time.monotonic() + 60
    while not (root / "session_id.txt").exists():
        assert time.monotonic() < deadline, "the notebook never opened its session"
        time.sleep(0.2)
    session_id = (root / "session_id.txt").read_text()
    assert wb.sessions().set_index("id").loc[session_id]["is_active"]
    row = sessions.locator(f'tr[data-session-id="{session_id}"]')
    expect(row.locator(".mor-countdown")).to_contain_text(":")
    row.locator('[data-testid="close-session"]').click()
    expect(row).to_have_count(0)
    assert not wb.sessions().set_index("id").loc[session_id]["is_active"]
    expect(sessions.locator('[data-testid="status"]')).to_contain_text("closed session")


def test_with_every_session_closed_the_table_says_so(page: Page, wb: mor.Workbench) -> None:
    """Ending the chat's session elsewhere (its own button) empties the Sessions table, which
    then says so instead of "loading…"."""
    page.locator(".mor-chat button", has_text="end session").click()
    expect(page.locator('.mor-chat [data-testid="chat-session"]')).to_have_text("no session yet")
    sessions = page.locator(".mor-sessions")
    expect(sessions.locator("tr[data-session-id]")).to_have_count(0)
    assert not wb.sessions()["is_active"].any(), "another test left a session open"
    expect(sessions.locator(".mor-empty")).to_have_text("no open sessions")
    staked = sessions.locator('[data-testid="balances"] .mor-balance', has_text="staked")
    expect(staked).to_have_text("staked 0 MOR")
