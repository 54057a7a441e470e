// Sessions: balances, the open sessions with countdowns and Close buttons, Withdraw for
// on-hold stakes, Refresh. The kernel side reloads it whenever a session of its workbench is
// opened or closed (by any surface); it also reloads every 20 s while shown (the chain's
// clock, other processes).

export default {
  render({ model, el }) {
    const root = h("div", { class: "mor-widget mor-sessions", "data-testid": "mor-sessions" });
    el.append(root);
    const balances = h("div", { class: "mor-balances", "data-testid": "balances" });
    const withdraw = h("button", { class: "mor-button", text: "Withdraw released", "data-testid": "withdraw", title: "withdraw the on-hold stakes whose timelock has passed" });
    const refresh = h("button", { class: "mor-button", text: "↻", title: "reload" });
    const table = h("table", { class: "mor-table" });
    const footnote = h("div", { class: "mor-caption" });
    const [bar, stopBar] = statusBar(model);
    root.append(h("div", { class: "mor-toolbar" }, balances, withdraw, refresh), table, footnote, bar);
    withdraw.addEventListener("click", () => model.send({ type: "withdraw" }));
    refresh.addEventListener("click", () => model.send({ type: "refresh" }));

    const drawBalances = () => {
      const b = model.get("balance") || {};
      const item = (label, value, unit) => h("span", { class: "mor-balance" }, h("b", {}, label), ` ${fmtMor(value)} ${unit}`);
      balances.replaceChildren(
        item("ETH", b.eth, ""),
        item("MOR", b.mor, ""),
        item("staked", b.mor_staked, "MOR"),
        item("on hold", b.mor_on_hold, "MOR"),
        item("withdrawable", b.mor_on_hold_available, "MOR"),
      );
      withdraw.disabled = !b.mor_on_hold_available;
    };
    let seenAt = Date.now();
    const cells = [];
    const drawTable = () => {
      seenAt = Date.now();
      cells.length = 0;
      const closing = model.get("closing");
      const rows = model.get("sessions").map((s) => {
        const left = h("td", { class: "mor-countdown", "data-ends": s.ends_at });
        cells.push(left);
        const busy = closing.includes(s.id);
        return h("tr", { "data-session-id": s.id },
          h("td", { class: "mor-code", title: s.id }, s.id_short),
          h("td", {}, s.model),
          h("td", { class: "mor-code", title: s.provider }, s.provider_short),
          h("td", { class: "mor-mor" }, fmtMor(s.stake)),
          h("td", { class: "mor-mor" }, fmtMor(s.price_per_second * 3600)),
          left,
          h("td", {}, h("button", {
            class: "mor-button mor-danger",
            text: busy ? "closing…" : "Close",
            disabled: busy || !s.closable,
            title: s.closable ? "close on chain (the unused stake goes on hold)" : "not opened from this account's journal here",
            "data-testid": "close-session",
            "data-session-id": s.id,
            onclick: () => model.send({ type: "close", id: s.id }),
          })),
        );
      });
      const head = h("tr", {}, ...["session", "model", "provider", "stake MOR", "MOR/h", "time left", ""].map((t) => h("th", {}, t)));
      const empty = rows.length ? [] : [h("tr", {}, h("td", { colspan: 7, class: "mor-empty" }, model.get("loaded") ? "no open sessions" : "loading…"))];
      table.replaceChildren(h("thead", {}, head), h("tbody", {}, ...rows, ...empty));
      const closed = model.get("closed_count");
      footnote.textContent = closed ? `${closed} closed session(s) not shown` : "";
      tick();
    };
    let asked = false;
    const tick = () => {
      const now = model.get("chain_now");
      let ended = false;
      for (const cell of cells) {
        const left = secondsLeft(Number(cell.dataset.ends), now, seenAt);
        cell.textContent = left ? clock(left) : "ended";
        cell.classList.toggle("mor-ending", left < 60);
        ended = ended || left === 0;
      }
      if (ended && !asked) {
        asked = true; // housekeeping closes ended sessions; look again shortly
        setTimeout(() => { asked = false; model.send({ type: "refresh" }); }, 5000);
      }
    };
    const timer = setInterval(tick, 1000);
    const poll = setInterval(() => model.send({ type: "refresh" }), 20000);
    const stops = [
      stopBar,
      follow(model, ["balance"], drawBalances),
      follow(model, ["sessions", "closing", "chain_now", "closed_count", "loaded"], drawTable),
      () => clearInterval(timer),
      () => clearInterval(poll),
    ];
    return () => stops.forEach((s) => s());
  },
};
